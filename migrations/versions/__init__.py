"""The main line of revisions (a package only so that it is installed with ``migrations``)."""
