"""Model output -> neutral events: tool-call families, thinking, schema repair, tool_choice."""
