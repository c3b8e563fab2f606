"""The worker side: the task base class, kwargs binding, the job loop, execution recording."""
