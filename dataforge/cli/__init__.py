"""The ``dataforge`` command line (click). One module per verb group."""
