"""Tasks as plug-ins: one file per kind of model output (classification, regression, forecast, language modeling,
translation). A task says how to build its metrics, what its final report and plots are, how `predict` reads inputs
and writes outputs, and the input/output signature that export and serving use. See `dlforge.tasks.base.Task`."""
