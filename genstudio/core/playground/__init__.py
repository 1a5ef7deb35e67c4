"""The 2-D playground, Qt-free: toy data and drawn points (toys), densities on a grid and the
yardstick computed from them (grid)."""
