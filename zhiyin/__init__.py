"""Zhiyin (知音): the app core — config, i18n, context assembly, prompts, edits, chat, review, CLI."""
