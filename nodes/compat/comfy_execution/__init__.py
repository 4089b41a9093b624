"""ComfyUI's `comfy_execution` package as plugins import it: `graph_utils.GraphBuilder`, `graph.ExecutionBlocker`
and `graph.DynamicPrompt`."""
