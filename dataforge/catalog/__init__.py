"""The task catalogue: which tasks exist and what each one takes."""
