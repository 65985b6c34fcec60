"""Network: a VPC without NAT, endpoints instead, and the two security groups.

Workers and the selector function live in isolated subnets (no route to the
internet, no NAT gateway to pay for). What they need from AWS comes through
VPC endpoints: gateway endpoints (free) for DynamoDB and S3, interface
endpoints (billed per hour and AZ) only for what workers call beyond those:
SQS (build jobs), Auto Scaling (completing the drain lifecycle action, an
instance's own health), Secrets Manager (the worker key), CloudWatch Logs (the
workers' logs), unless ``infaas:ssm=false`` the three of Session Manager, and
unless ``infaas:tier=off`` Lambda (the selector invoking the serverless tier).

Security groups: the workers' group admits the worker port from the
selector's group and nothing else, so only the selector reaches a worker.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from .config import WORKER_PORT, DeployConfig

INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "AutoScaling": ec2.InterfaceVpcEndpointAwsService.AUTOSCALING,
    # the worker key (Data.worker_key): the selector and the workers read it from inside the VPC
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    # the workers' journal and install log (infaas.adapters.aws.logship, install.sh)
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}
# Session Manager on the workers (its agent's three services); infaas:ssm=false leaves them out
SSM_ENDPOINTS = {
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
}


class Network(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=config.max_azs,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20)
            ],
            restrict_default_security_group=True,
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                              traffic_type=ec2.FlowLogTrafficType.REJECT)
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB,
                                      subnets=[self.subnets])
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets])

        self.selector_sg = ec2.SecurityGroup(
            self, "SelectorSg", vpc=self.vpc, allow_all_outbound=True,
            description="infaas selector function: reaches the workers and DynamoDB",
        )
        self.worker_sg = ec2.SecurityGroup(
            self, "WorkerSg", vpc=self.vpc, allow_all_outbound=True,
            description="infaas workers: the worker port from the selector only",
        )
        self.worker_sg.add_ingress_rule(self.selector_sg, ec2.Port.tcp(WORKER_PORT),
                                        "queries from the selector function only")
        endpoint_sg = ec2.SecurityGroup(
            self, "EndpointSg", vpc=self.vpc, allow_all_outbound=False,
            description="infaas interface endpoints: HTTPS from the workers",
        )
        endpoint_sg.add_ingress_rule(self.worker_sg, ec2.Port.tcp(443), "AWS APIs from the workers")
        endpoints = {**INTERFACE_ENDPOINTS, **(SSM_ENDPOINTS if config.ssm else {})}
        for name, service in endpoints.items():
            self.vpc.add_interface_endpoint(name, service=service, subnets=self.subnets,
                                            security_groups=[endpoint_sg], private_dns_enabled=True, open=False)
        if config.tier:
            # the serverless tier: the selector invokes the inference functions from inside the VPC
            lambda_sg = ec2.SecurityGroup(self, "LambdaEndpointSg", vpc=self.vpc, allow_all_outbound=False,
                                          description="infaas Lambda endpoint: HTTPS from the selector")
            lambda_sg.add_ingress_rule(self.selector_sg, ec2.Port.tcp(443), "invoking the inference functions")
            self.vpc.add_interface_endpoint("Lambda", service=ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
                                            subnets=self.subnets, security_groups=[lambda_sg],
                                            private_dns_enabled=True, open=False)
