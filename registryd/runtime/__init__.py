"""The running process: the twistd service, its composition, worker processes, threads and logging."""
