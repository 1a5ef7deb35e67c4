"""What a person does with a trained model: sampling, the latent space (encode, decode,
interpolate, map), inpainting with its masks, held-out likelihood and comparing runs."""
