"""charforge.generators: the LLM factory and backends, the embedded default model, the pipeline runner
(local or Ray) and the distilabel generation stages (docs/design.md §2, §6)."""
