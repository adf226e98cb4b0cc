"""Attack-stage work that needs models, as bounded Ray tasks (tasks.map_tasks), cached in the run."""
