"""Infrastructure as code: the Azure ML workspace, clusters, datastore and identities (Pulumi)."""
