"""Minimal JSON schemas of the Karpenter v1 NodePool and EC2NodeClass fields this project uses."""

# Written from the v1 CRDs (karpenter.sh/v1, karpenter.k8s.aws/v1): the field names, enums and
# the string patterns the API server enforces. Unknown fields are rejected, as the API server
# prunes/rejects them, so a misspelt field fails here instead of vanishing in the cluster.

from __future__ import annotations

# The CRD patterns, anchored at both ends (the CRD's own alternations are loosely anchored).
DURATION = r"^(([0-9]+(s|m|h))+|Never)$"  # no `d`: 60 days is 1440h
BUDGET_DURATION = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"
BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]+)$"
CRON = (
    r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|(\S+)\s(\S+)\s(\S+)\s(\S+)\s(\S+))$"
)
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE])?$"
VOLUME_SIZE = r"^[1-9][0-9]*(Gi|Ti)$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_string_map = {"type": "object", "additionalProperties": {"type": "string"}}
_metadata = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            "maxLength": 253,
        },
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
        },
    },
    "required": ["name"],
}

NODEPOOL = _closed(
    {
        "apiVersion": {"const": "karpenter.sh/v1"},
        "kind": {"const": "NodePool"},
        "metadata": _metadata,
        "spec": _closed(
            {
                "template": _closed(
                    {
                        "metadata": _closed(
                            {
                                "labels": {
                                    "type": "object",
                                    "maxProperties": 100,
                                    "additionalProperties": {
                                        "type": "string",
                                        "maxLength": 63,
                                        "pattern": LABEL_VALUE,
                                    },
                                },
                                "annotations": _string_map,
                            }
                        ),
                        "spec": _closed(
                            {
                                "nodeClassRef": _closed(
                                    {
                                        "group": {"type": "string", "pattern": r"^[^/]+$"},
                                        "kind": {"type": "string", "minLength": 1},
                                        "name": {"type": "string", "minLength": 1},
                                    },
                                    ("group", "kind", "name"),
                                ),
                                "requirements": {
                                    "type": "array",
                                    "maxItems": 100,
                                    "items": _closed(
                                        {
                                            "key": {"type": "string", "maxLength": 316},
                                            "operator": {
                                                "enum": [
                                                    "In",
                                                    "NotIn",
                                                    "Exists",
                                                    "DoesNotExist",
                                                    "Gt",
                                                    "Lt",
                                                ]
                                            },
                                            "values": {
                                                "type": "array",
                                                "items": {"type": "string", "maxLength": 63},
                                            },
                                            "minValues": {"type": "integer", "minimum": 1},
                                        },
                                        ("key", "operator"),
                                    ),
                                },
                                "taints": {
                                    "type": "array",
                                    "items": _closed(
                                        {
                                            "key": {"type": "string", "minLength": 1},
                                            "value": {"type": "string", "pattern": LABEL_VALUE},
                                            "effect": {
                                                "enum": [
                                                    "NoSchedule",
                                                    "PreferNoSchedule",
                                                    "NoExecute",
                                                ]
                                            },
                                        },
                                        ("key", "effect"),
                                    ),
                                },
                                "expireAfter": {"type": "string", "pattern": DURATION},
                                "terminationGracePeriod": {"type": "string", "pattern": DURATION},
                            },
                            ("nodeClassRef", "requirements"),
                        ),
                    },
                    ("spec",),
                ),
                "disruption": _closed(
                    {
                        "consolidationPolicy": {"enum": ["WhenEmpty", "WhenEmptyOrUnderutilized"]},
                        "consolidateAfter": {"type": "string", "pattern": DURATION},
                        "budgets": {
                            "type": "array",
                            "maxItems": 50,
                            "items": {
                                **_closed(
                                    {
                                        "nodes": {"type": "string", "pattern": BUDGET_NODES},
                                        "schedule": {"type": "string", "pattern": CRON},
                                        "duration": {"type": "string", "pattern": BUDGET_DURATION},
                                        "reasons": {
                                            "type": "array",
                                            "items": {
                                                "enum": ["Underutilized", "Empty", "Drifted"]
                                            },
                                        },
                                    },
                                    ("nodes",),
                                ),
                                # 'schedule' must be set with 'duration' (a CEL rule in the CRD)
                                "dependentRequired": {
                                    "schedule": ["duration"],
                                    "duration": ["schedule"],
                                },
                            },
                        },
                    },
                    ("consolidateAfter",),
                ),
                "limits": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "pattern": QUANTITY},
                },
                "weight": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            ("template",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

AMI_ALIAS = r"^(al2|al2023|bottlerocket|windows2019|windows2022)@.+$"  # family@version

_selector_terms = {
    "type": "array",
    "minItems": 1,
    "maxItems": 30,
    "items": _closed({"tags": _string_map, "id": {"type": "string"}}),
}

EC2NODECLASS = _closed(
    {
        "apiVersion": {"const": "karpenter.k8s.aws/v1"},
        "kind": {"const": "EC2NodeClass"},
        "metadata": _metadata,
        "spec": _closed(
            {
                "role": {"type": "string", "minLength": 1},
                "amiSelectorTerms": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "alias": {"type": "string", "pattern": AMI_ALIAS},
                            "tags": _string_map,
                            "id": {"type": "string"},
                        }
                    ),
                },
                "subnetSelectorTerms": _selector_terms,
                "securityGroupSelectorTerms": _selector_terms,
                "blockDeviceMappings": {
                    "type": "array",
                    "maxItems": 50,
                    "items": _closed(
                        {
                            "deviceName": {"type": "string", "pattern": r"^/dev/[a-z0-9]+$"},
                            "rootVolume": {"type": "boolean"},
                            "ebs": _closed(
                                {
                                    "volumeSize": {"type": "string", "pattern": VOLUME_SIZE},
                                    "volumeType": {
                                        "enum": [
                                            "standard",
                                            "io1",
                                            "io2",
                                            "gp2",
                                            "sc1",
                                            "st1",
                                            "gp3",
                                        ]
                                    },
                                    "iops": {"type": "integer", "minimum": 3000, "maximum": 16000},
                                    "throughput": {
                                        "type": "integer",
                                        "minimum": 125,
                                        "maximum": 1000,
                                    },
                                    "encrypted": {"type": "boolean"},
                                    "deleteOnTermination": {"type": "boolean"},
                                    "kmsKeyID": {"type": "string"},
                                    "snapshotID": {"type": "string"},
                                }
                            ),
                        }
                    ),
                },
                "metadataOptions": _closed(
                    {
                        "httpEndpoint": {"enum": ["enabled", "disabled"]},
                        "httpProtocolIPv6": {"enum": ["enabled", "disabled"]},
                        "httpPutResponseHopLimit": {"type": "integer", "minimum": 1, "maximum": 64},
                        "httpTokens": {"enum": ["required", "optional"]},
                    }
                ),
                "tags": _string_map,
                "userData": {"type": "string"},
                "detailedMonitoring": {"type": "boolean"},
                "associatePublicIPAddress": {"type": "boolean"},
            },
            ("role", "amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
