"""Custom actions in the rasa_sdk style.

The engine registers them with ``rasa_sdk.executor.ActionExecutor`` and calls them
in-process the way it does (``Engine.call_action``, without its HTTP-side overhead); the
same package also serves behind a real action server:
``python -m rasa_sdk --actions actions``.
"""
