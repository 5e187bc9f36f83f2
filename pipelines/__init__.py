"""The EcoTune Kubeflow pipeline, its compiler entry point and the study submitter."""
