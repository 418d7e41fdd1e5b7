"""Business rules: each module is one capability, callable without HTTP."""
