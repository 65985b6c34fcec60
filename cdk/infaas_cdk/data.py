"""Data: the metadata table, the model bucket, the build queues with their
dead-letter queues -- exactly the resources ``docs/aws-tables.md`` designs and
the adapters' ``create_table``, ``create_bucket`` and ``create_lane`` create
in tests."""

from __future__ import annotations

from aws_cdk import (
    Duration,
    RemovalPolicy,
)
from aws_cdk import (
    aws_dynamodb as dynamodb,
)
from aws_cdk import (
    aws_s3 as s3,
)
from aws_cdk import (
    aws_secretsmanager as secretsmanager,
)
from aws_cdk import (
    aws_sqs as sqs,
)
from constructs import Construct

from .config import HARDWARE, DeployConfig

MAX_RECEIVES = 3  # = INFAAS_MAX_RECEIVES; SqsJobQueue checks the redrive policy says the same


class Data(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, prefix: str) -> None:
        super().__init__(scope, id)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        self.table = dynamodb.Table(
            self,
            "Metadata",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute="expires_at",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            removal_policy=removal,
        )
        self.table.add_global_secondary_index(
            index_name="gsi1",
            partition_key=dynamodb.Attribute(name="gsi1pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="gsi1sk", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        self.bucket = s3.Bucket(
            self,
            "Models",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="models/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=Duration.days(30),
                                 abort_incomplete_multipart_upload_after=Duration.days(7)),
                s3.LifecycleRule(id="expire-unregistered-uploads", prefix="uploads/", expiration=Duration.days(1)),
            ],
            removal_policy=removal,
        )

        self.queue_prefix = f"{prefix}-"
        self.lanes: dict[str, sqs.Queue] = {}
        self.dead_letters: dict[str, sqs.Queue] = {}
        for hw in HARDWARE:
            lane = f"build-{hw}"
            dlq = sqs.Queue(
                self, f"Dlq-{hw}", queue_name=f"{self.queue_prefix}{lane}-dlq",
                encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                retention_period=Duration.days(14),
            )
            self.dead_letters[hw] = dlq
            self.lanes[hw] = sqs.Queue(
                self, f"Lane-{hw}", queue_name=f"{self.queue_prefix}{lane}",
                encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                retention_period=Duration.days(4),
                visibility_timeout=Duration.minutes(15),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVES),
            )

        # Offline (batch) job items: one lane for every hardware type (workers take
        # items only on spare capacity), with its own dead-letter queue.
        offline_dlq = sqs.Queue(
            self, "Dlq-offline", queue_name=f"{self.queue_prefix}offline-dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True, retention_period=Duration.days(14),
        )
        self.dead_letters["offline"] = offline_dlq
        self.offline_lane = sqs.Queue(
            self, "Lane-offline", queue_name=f"{self.queue_prefix}offline",
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True, retention_period=Duration.days(4),
            visibility_timeout=Duration.minutes(5),
            dead_letter_queue=sqs.DeadLetterQueue(queue=offline_dlq, max_receive_count=MAX_RECEIVES),
        )

        # The worker key: every selector -> worker call carries it and workers refuse any call
        # without it (infaas.wiring.worker_secret). Only the selector and the worker fleets may read it.
        self.worker_key = secretsmanager.Secret(
            self, "WorkerKey", description="infaas: the credential every selector-to-worker call carries",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
            removal_policy=RemovalPolicy.DESTROY,
        )

    def adapter_environment(self) -> dict[str, str]:
        """What ``infaas.wiring.aws.AwsResources`` reads."""
        return {
            "INFAAS_BACKEND": "aws",
            "INFAAS_TABLE": self.table.table_name,
            "INFAAS_BUCKET": self.bucket.bucket_name,
            "INFAAS_QUEUE_PREFIX": self.queue_prefix,
            "INFAAS_MAX_RECEIVES": str(MAX_RECEIVES),
            # offline jobs: each tenant reads and writes under <this>/<tenant>/ only (infaas.wiring.open_location)
            "INFAAS_OFFLINE_S3_ROOT": f"s3://{self.bucket.bucket_name}/offline",
        }
