"""Names shared by the operator, the jobs and the monitors: API group, labels, annotations, finalizer
and MLflow tag keys. One place, so a rename cannot leave a reader and a writer disagreeing."""

from __future__ import annotations

GROUP = "tuneloop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tuneloop"

FINETUNE_KIND = "FineTune"
FINETUNE_PLURAL = "finetunes"
FINETUNE_SHORT = "ft"
DEPLOYMENT_KIND = "ModelDeployment"
DEPLOYMENT_PLURAL = "modeldeployments"
DEPLOYMENT_SHORT = "mdep"

FINALIZER = f"{GROUP}/cleanup"

# Labels on children. Never copy the parent's labels: Argo CD tracks by label/annotation and would
# adopt or prune our children as if they came from Git (argo-cd #8683).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "tuneloop"
LABEL_FINETUNE = f"{GROUP}/finetune"
LABEL_RUN = f"{GROUP}/run"
LABEL_DEPLOYMENT = f"{GROUP}/modeldeployment"

# Annotations. A retrain request lands as an annotation on the FineTune, never as a spec change,
# so a spec that Git owns is never mutated.
ANNOTATION_RETRAIN_REQUEST = f"{GROUP}/retrain-request"
ANNOTATION_APPROVE_RETRAIN = f"{GROUP}/approve-retrain"
# Set with the request: who asked, when and why (metric, drift figures); the run it starts records it in status.
ANNOTATION_RETRAIN_REASON = f"{GROUP}/retrain-reason"
# `<request id>: <uri>`: labelled feedback the retrain adds to spec.dataset (set with the request).
ANNOTATION_RETRAIN_DATA = f"{GROUP}/retrain-data"
# Set by the operator on a FineTune whose version just lost `champion`: wakes it to re-read its alias.
ANNOTATION_ALIAS_CHECK = f"{GROUP}/alias-check"
KOPF_ANNOTATION_PREFIX = GROUP

# MLflow tags that carry lineage. The controller finds a version again by (uid, run) after a restart.
TAG_FINETUNE_UID = "tuneloop.finetune.uid"
TAG_FINETUNE_NAME = "tuneloop.finetune.name"
TAG_FINETUNE_NAMESPACE = "tuneloop.finetune.namespace"
TAG_RUN_NUMBER = "tuneloop.run.number"
TAG_RUN_ATTEMPT = "tuneloop.run.attempt"
TAG_SPEC_GENERATION = "tuneloop.spec.generation"
TAG_DATASET_HASH = "tuneloop.dataset.hash"
TAG_DATASET_URI = "tuneloop.dataset.uri"
TAG_BASE_MODEL = "tuneloop.base_model.uri"
TAG_BASE_MODEL_REVISION = "tuneloop.base_model.revision"
TAG_METHOD = "tuneloop.method"
TAG_OPERATOR_VERSION = "tuneloop.operator.version"
TAG_EVAL_METRIC_PREFIX = "tuneloop.eval."
# Where a running job is: training, evaluating, logging_model, succeeded, failed (progress views read it).
TAG_STAGE = "tuneloop.stage"
# The training job logs its JobResult under this artifact name on its MLflow run (tagged with the
# FineTune uid, run number and attempt), so the controller can read it when the job ran in a pod.
RESULT_ARTIFACT = "tuneloop-result.json"

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
