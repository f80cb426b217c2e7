"""The client side, run from a workstation or CI: submit to Azure ML and follow the job
(status, logs, download, register), and report on a run. Nothing here goes into the training
image or the Azure ML job's code."""
