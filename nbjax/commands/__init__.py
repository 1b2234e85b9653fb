"""The command layer: ``nbjax`` and its subcommands.

Nothing in the library (``nbjax.*`` outside this package) imports from here;
a test enforces it.  :mod:`~nbjax.commands.main` dispatches,
:mod:`~nbjax.commands.options` reads nbjax's own ``--options`` and sets JAX
up, and one module per command does the work: :mod:`~nbjax.commands.render`,
:mod:`~nbjax.commands.compare`, :mod:`~nbjax.commands.fit`,
:mod:`~nbjax.commands.example`.
"""
