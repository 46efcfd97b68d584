"""The agent console (``/console``): login, queues, the hand-off view and its actions.

See :mod:`bot.console.routes` for the routes and :mod:`bot.console.auth` for access control.
"""
