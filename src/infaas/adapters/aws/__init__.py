"""AWS adapters: DynamoDB item table, S3 model store and offline locations, SQS job queue,
the Auto Scaling fleet and its drain watcher (``fleet.py``), and the CloudWatch metric names
the Lambda functions publish (``metrics.py``).

The modules with a client need boto3 (the ``aws`` extra) and are imported only where the
AWS wiring is used, so the local stack runs without it. Every adapter takes an
injectable boto3 client and raises ``infaas.core.errors`` only; the contract suites
in ``tests/contract`` run them against moto. The resources are described in
``docs/aws-tables.md``.
"""
