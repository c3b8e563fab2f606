"""Optional revisions, outside ``head`` (a package only so that it is installed)."""
