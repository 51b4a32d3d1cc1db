"""Seeds and reads a moto_server for tests/plugin_examples.rs, with boto3 (no Rust AWS SDK).

Usage: python aws_seed.py ENDPOINT COMMAND < args.json; prints the result as JSON.
Credentials and region come from the environment the test sets (dummy values).
"""

import json
import sys

import boto3

AMI = "ami-12c6146b"


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT)


def cloudmap(args):
    """An HTTP namespace with one service and its instances; health set per instance."""
    sd = client("servicediscovery")
    sd.create_http_namespace(Name=args["namespace"])
    ns = next(n["Id"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == args["namespace"])
    service = sd.create_service(
        Name=args["service"], NamespaceId=ns, HealthCheckCustomConfig={"FailureThreshold": 1}
    )["Service"]["Id"]
    for inst in args["instances"]:
        sd.register_instance(ServiceId=service, InstanceId=inst["id"], Attributes=inst["attributes"])
        if inst.get("health"):
            sd.update_instance_custom_health_status(ServiceId=service, InstanceId=inst["id"], Status=inst["health"])
    return {"namespace_id": ns, "service_id": service}


def elbv2(args):
    """A VPC with two subnets, `count` instances, an instance target group with them registered
    (the second on port 9090), the last one stopped, and an ip target group."""
    ec2, elb = client("ec2"), client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    instances = []
    for i in range(args["count"]):
        inst = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnets[i % 2])["Instances"][0]
        instances.append(
            {"id": inst["InstanceId"], "ip": inst["PrivateIpAddress"], "zone": inst["Placement"]["AvailabilityZone"]}
        )
    tg = elb.create_target_group(Name="web-instances", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance")
    tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
    targets = [{"Id": inst["id"]} for inst in instances]
    targets[1]["Port"] = 9090
    elb.register_targets(TargetGroupArn=tg_arn, Targets=targets)
    ec2.stop_instances(InstanceIds=[instances[-1]["id"]])
    ip = elb.create_target_group(Name="web-ips", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")
    ip_arn = ip["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=ip_arn, Targets=[{"Id": "10.20.1.50"}, {"Id": "10.20.2.51", "Port": 81}])
    return {"instances": instances, "instance_tg": tg_arn, "ip_tg": ip_arn}


def elbv2_ipv6(args):
    """A dual-stack VPC, an instance with an IPv6 address and one without, both registered in
    the target group `web-v6`."""
    ec2, elb = client("ec2"), client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    block = vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"].replace("/56", "/64")
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.40.1.0/24", Ipv6CidrBlock=block)["Subnet"]["SubnetId"]
    dual = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet, Ipv6AddressCount=1)["Instances"][0]
    v4 = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]
    tg = elb.create_target_group(Name="web-v6", Protocol="HTTP", Port=8080, VpcId=vpc["VpcId"], TargetType="instance")
    arn = tg["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": dual["InstanceId"]}, {"Id": v4["InstanceId"]}])
    return {
        "dual": {"id": dual["InstanceId"], "ipv6": dual["NetworkInterfaces"][0]["Ipv6Addresses"][0]["Ipv6Address"]},
        "v4_only": {"id": v4["InstanceId"]},
    }


def deregister(args):
    client("elbv2").deregister_targets(TargetGroupArn=args["arn"], Targets=[{"Id": i} for i in args["ids"]])
    return {}


def hosted_zone(args):
    """A public hosted zone, or with `private: true` one attached to a new VPC."""
    extra = {}
    if args.get("private"):
        vpc = client("ec2").create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        extra = {"VPC": {"VPCRegion": "us-east-1", "VPCId": vpc}, "HostedZoneConfig": {"PrivateZone": True}}
    reference = args["name"] + ("-private" if args.get("private") else "")
    zone = client("route53").create_hosted_zone(Name=args["name"], CallerReference=reference, **extra)
    return {"id": zone["HostedZone"]["Id"].rsplit("/", 1)[-1]}


def records(args):
    """The zone's A and AAAA record sets: [{name, type, ttl, values}]."""
    r53 = client("route53")
    out = []
    for page in r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=args["zone_id"]):
        for rr in page["ResourceRecordSets"]:
            if rr["Type"] in ("A", "AAAA"):
                out.append(
                    {
                        "name": rr["Name"],
                        "type": rr["Type"],
                        "ttl": rr.get("TTL"),
                        "values": sorted(r["Value"] for r in rr.get("ResourceRecords", [])),
                    }
                )
    return out


def upsert(args):
    """Writes a record set directly (what another tool, or a person, may have done)."""
    client("route53").change_resource_record_sets(
        HostedZoneId=args["zone_id"],
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": args["name"],
                        "Type": args["type"],
                        "TTL": args["ttl"],
                        "ResourceRecords": [{"Value": v} for v in args["values"]],
                    },
                }
            ]
        },
    )
    return {}


COMMANDS = {f.__name__.replace("_", "-"): f for f in (cloudmap, elbv2, elbv2_ipv6, deregister, hosted_zone, records, upsert)}

if __name__ == "__main__":
    ENDPOINT = sys.argv[1]
    print(json.dumps(COMMANDS[sys.argv[2]](json.load(sys.stdin))))
