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
    aws_iam as iam,
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

# The actions the adapters' calls need (tests/infrastructure/test_iam_map.py maps each call to its action):
# granted action by action instead of CDK's grant_* sets, which add batch, scan, stream, tagging and
# retention actions no code here makes.
TABLE_READ = ("dynamodb:GetItem", "dynamodb:Query")
TABLE_WRITE = (*TABLE_READ, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
LANE_SEND = ("sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl")
LANE_CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl")

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

    def grant_table(self, grantee: iam.IGrantable, actions: tuple[str, ...]) -> None:
        """Item actions on the table and its indexes (``DynamoItemTable``'s queries may name gsi1)."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=list(actions), resources=[self.table.table_arn, f"{self.table.table_arn}/index/*"]))

    def grant_objects(self, grantee: iam.IGrantable, actions: tuple[str, ...], *, list_keys: bool) -> None:
        """Object actions on the model bucket's keys, and ``s3:ListBucket`` on the bucket when the role lists."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=list(actions), resources=[self.bucket.arn_for_objects("*")]))
        if list_keys:
            grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn]))

    def grant_lanes(self, grantee: iam.IGrantable, actions: tuple[str, ...]) -> None:
        """Queue actions on every build lane and the offline lane."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=list(actions),
            resources=[lane.queue_arn for lane in (*self.lanes.values(), self.offline_lane)]))

    def grant_worker_key(self, grantee: iam.IGrantable) -> None:
        """Reading the worker key's value (``read_secret``), nothing else of the secret."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue"], resources=[self.worker_key.secret_arn]))

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
