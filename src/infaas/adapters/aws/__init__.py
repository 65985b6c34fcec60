"""AWS adapters: DynamoDB item table, S3 model store, SQS job queue.

Each module needs boto3 (the ``aws`` extra) and is imported only where the AWS
wiring is used, so the local stack runs without it. Every adapter takes an
injectable boto3 client and raises ``infaas.core.errors`` only; the contract suites
in ``tests/contract`` run them against moto. The resources are described in
``docs/aws-tables.md``.
"""
