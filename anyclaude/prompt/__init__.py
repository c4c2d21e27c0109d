"""The prompt as the model sees it: Anthropic blocks -> chat messages -> template -> token ids.

Shared by the engine (which runs it) and any process that must count exactly."""
