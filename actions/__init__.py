"""Custom actions in the rasa_sdk style.

The engine runs them in-process through ``rasa_sdk.executor.ActionExecutor``; the
same package also serves behind a real action server:
``python -m rasa_sdk --actions actions``.
"""
