"""Drop-in compatibility with the official OpenAI and Google SDKs: their request, response and error
shapes on top of the native pipeline (generation.sync → jobs.job_submit), synchronous."""
