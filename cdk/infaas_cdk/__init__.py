"""The CDK app of the AWS deployment: one stack composed of one construct per concern."""
