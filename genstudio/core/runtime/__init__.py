"""Training: the loop (training.py) and what runs around a family's step (step_runtime.py and
its parts: interrupt, guard, accel, distributed), with the process-level settings it needs
(memory, cpu_threads, device) and the multi-process launcher (launch.py)."""
