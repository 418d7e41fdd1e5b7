"""calbot core: everything the Lambda handlers share (models, store, vault, providers, services)."""
