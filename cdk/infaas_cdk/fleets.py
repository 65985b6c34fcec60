"""Worker fleets: one Auto Scaling group per hardware type, each from a launch template.

A worker machine is built at boot by user data on a stock image (see
``worker_ami/README.md`` for the choice): it downloads its hardware type's
bundle (install script, systemd units, a wheelhouse) from the CDK asset
bucket through the S3 gateway endpoint, writes ``/etc/infaas/worker.env``
(region, table, bucket, queue prefix, group), and runs the install script,
which starts ``infaas-worker.service`` and ``infaas-drain.service``.

Every group has the termination lifecycle hook ``infaas-drain``: a leaving
instance waits (up to the hook's timeout) while its drain watcher drains the
worker, then completes the action (``infaas.adapters.aws.fleet``).

Workers are cattle:

* **health**: EC2 status checks with a grace of ``HEALTH_GRACE`` (the boot and
  install), and the autoscaler marks an instance unhealthy once its worker has
  not heartbeated for ``HEALTH_MISSED`` after that grace
  (``fleet.judge_health``); an install that fails marks its own instance
  unhealthy at once (``install.sh``). Either way the group replaces it.
* **replacement on change**: the user data names the bundle's asset (its hash),
  so a new bundle or any change of the launch template is a new template
  version, and the group's rolling update policy replaces the running
  instances one at a time, each leaving through the drain hook.
* **access and logs**: Session Manager (``AmazonSSMManagedInstanceCore``; no
  SSH, no open port) through interface endpoints; the journal of the infaas
  units and the install log go to the worker log group (``logs``), kept a
  month.
"""

from __future__ import annotations

from aws_cdk import Annotations, Aws, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from .artifacts import worker_bundle
from .config import WORKER_PORT, DeployConfig, FleetConfig, hardware_prices
from .data import LANE_CONSUME, TABLE_WRITE, Data
from .network import Network

HOOK_NAME = "infaas-drain"  # = infaas.adapters.aws.fleet.HOOK_NAME
DRAIN_TIMEOUT = Duration.minutes(2)
HEALTH_GRACE = Duration.minutes(10)  # = infaas.adapters.aws.fleet.HEALTH_GRACE_S
HEALTH_MISSED = Duration.minutes(3)  # = infaas.adapters.aws.fleet.HEALTH_MISSED_S
UPDATE_PAUSE = Duration.minutes(5)  # between two replaced instances of a rolling update


class Fleets(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, data: Data, network: Network,
                 prefix: str) -> None:
        super().__init__(scope, id)
        self.role = iam.Role(self, "WorkerRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                             description="infaas workers: table, model bucket, build lanes, their own drain")
        # (each action is one the worker's calls make: tests/infrastructure/test_iam_map.py; no object deletes)
        data.grant_table(self.role, TABLE_WRITE)
        data.grant_objects(self.role, ("s3:GetObject", "s3:PutObject"), list_keys=True)
        data.grant_lanes(self.role, LANE_CONSUME)
        # making an offline job's items (JobService.expand, on the expand message): batch writes of their
        # records, batch sends of their messages to the offline lane (and no other)
        data.grant_table(self.role, ("dynamodb:BatchWriteItem",))
        self.role.add_to_policy(iam.PolicyStatement(actions=["sqs:SendMessage"],
                                                    resources=[data.offline_lane.queue_arn]))
        data.grant_worker_key(self.role)  # the credential the workers check on every call
        # Session Manager: an operator's shell on a worker without SSH or an open port
        self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore"))
        # the journal of the infaas units and the install log (logship.py, install.sh)
        self.log_group = logs.LogGroup(self, "WorkerLogs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.log_group.grant_write(self.role)

        self.group_names = {hw: f"{prefix}-workers-{hw}" for hw in config.fleets}
        group_arns = [
            f"arn:{Aws.PARTITION}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/{n}"
            for n in self.group_names.values()
        ]
        self.group_arns = group_arns
        # its own drain (drain watcher) and, when its install failed, its own health (install.sh)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth"], resources=group_arns))

        self.groups: dict[str, autoscaling.AutoScalingGroup] = {}
        self.launch_templates: dict[str, ec2.LaunchTemplate] = {}
        for hw, fleet in config.fleets.items():
            self._group(hw, fleet, config, data, network)

    def _group(self, hw: str, fleet: FleetConfig, config: DeployConfig, data: Data, network: Network) -> None:
        # A fleet that may never start a machine (max 0) boots nothing from its bundle: a placeholder
        # is enough even where artifacts are required.
        path, built = worker_bundle(hw, config.require_artifacts and fleet.max_size > 0)
        if not built:
            Annotations.of(self).add_warning_v2(
                f"infaas:worker-bundle-{hw}", f"The {hw} worker bundle is a placeholder: run "
                "`python worker_ami/build_bundle.py` before deploying.")
        bundle = s3_assets.Asset(self, f"Bundle-{hw}", path=str(path))
        # the boot's one download (`aws s3 cp` of this object), nothing else of the asset bucket
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key)]))

        env = {
            **data.adapter_environment(),
            "AWS_REGION": Aws.REGION,
            "AWS_DEFAULT_REGION": Aws.REGION,
            "INFAAS_HARDWARE": hw,
            "INFAAS_PORT": str(WORKER_PORT),
            "INFAAS_GROUP": self.group_names[hw],
            "INFAAS_HARDWARE_PRICES": hardware_prices(config),
            "INFAAS_BUILD_HARDWARE": config.build_hardware,
            "INFAAS_HEARTBEAT_S": "2",
            "INFAAS_HEARTBEAT_TTL_S": "10",
            "INFAAS_QUEUE_WAIT_S": "10",
            "INFAAS_DATA_DIR": "/var/lib/infaas",
            "INFAAS_MODEL_CACHE_DIR": "/var/cache/infaas",
            "INFAAS_WORKER_SECRET_ARN": data.worker_key.secret_arn,
            "INFAAS_LOG_GROUP": self.log_group.log_group_name,
        }
        user_data = ec2.UserData.for_linux()
        user_data.add_commands("set -euo pipefail")
        # the region given: the bucket is reached through the VPC's S3 gateway endpoint, in this region
        zip_path = user_data.add_s3_download_command(bucket=bundle.bucket, bucket_key=bundle.s3_object_key,
                                                     local_file="/opt/infaas/bundle.zip", region=Aws.REGION)
        user_data.add_commands(
            "mkdir -p /etc/infaas /opt/infaas/bundle",
            f"python3 -m zipfile -e {zip_path} /opt/infaas/bundle",
            "cat > /etc/infaas/worker.env <<'EOF'",
            *[f"{k}={v}" for k, v in env.items()],
            "EOF",
            # install.sh logs to /var/log/infaas-install.log; on failure its tail goes to the console too
            f"bash /opt/infaas/bundle/install.sh {hw} || {{ rc=$?; tail -n 50 /var/log/infaas-install.log; exit $rc; }}",
        )
        machine_image = (ec2.MachineImage.from_ssm_parameter(fleet.ami_parameter, os=ec2.OperatingSystemType.LINUX)
                         if fleet.ami_parameter else ec2.MachineImage.latest_amazon_linux2023())
        template = ec2.LaunchTemplate(
            self, f"Template-{hw}",
            instance_type=ec2.InstanceType(fleet.instance_type),
            machine_image=machine_image,
            role=self.role,
            security_group=network.worker_sg,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            block_devices=[ec2.BlockDevice(device_name=fleet.root_device, volume=ec2.BlockDeviceVolume.ebs(
                fleet.root_gb, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3, delete_on_termination=True))],
        )
        group = autoscaling.AutoScalingGroup(
            self, f"Group-{hw}",
            auto_scaling_group_name=self.group_names[hw],
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            launch_template=template,
            min_capacity=fleet.min_size,
            max_capacity=fleet.max_size,
            health_checks=autoscaling.HealthChecks.ec2(grace_period=HEALTH_GRACE),
            group_metrics=[autoscaling.GroupMetrics.all()],
            # a new template version (a new bundle, image, instance type, ...) replaces the running
            # instances one at a time; each leaves through the drain hook
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1, min_instances_in_service=min(fleet.min_size, max(fleet.max_size - 1, 0)),
                pause_time=UPDATE_PAUSE),
        )
        group.add_lifecycle_hook(
            "Drain", lifecycle_hook_name=HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=DRAIN_TIMEOUT, default_result=autoscaling.DefaultResult.CONTINUE,
        )
        Tags.of(group).add("infaas:hardware", hw)
        self.groups[hw] = group
        self.launch_templates[hw] = template

    def group_names_json(self) -> str:
        return Stack.of(self).to_json_string(self.group_names)
