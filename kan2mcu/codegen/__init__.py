"""Code generation: rendering the C, the model folder, bundles and the report."""
