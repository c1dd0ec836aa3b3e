"""The runnable comparison: a local cluster launcher, a load client, scenarios and reports."""
