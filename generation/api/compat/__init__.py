"""Drop-in compatibility with the official OpenAI and Google SDKs: their request, response and error
shapes on top of the native pipeline (generation.api.waiting → jobs.job_submit), synchronous."""
