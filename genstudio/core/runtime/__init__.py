"""Training: the loop (training.py) and what runs around a family's step (step_runtime.py: its
order, the interrupter and the divergence guard; accel.py and distributed.py for GPUs and
several processes), with the process-level settings it needs
(memory, cpu_threads, device) and the multi-process launcher (launch.py)."""
