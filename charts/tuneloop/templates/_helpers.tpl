{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "tuneloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuneloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tuneloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuneloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuneloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tuneloop.labels" -}}
helm.sh/chart: {{ include "tuneloop.chart" . }}
{{ include "tuneloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tuneloop
{{- end }}

{{- define "tuneloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuneloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tuneloop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces watched: a JSON list; empty means every namespace (cluster-wide). */}}
{{- define "tuneloop.watchNamespaces" -}}
{{- if and .Values.singleNamespaceInstall .Values.watchNamespaces }}
{{- fail "set either singleNamespaceInstall or watchNamespaces, not both" }}
{{- end }}
{{- if .Values.singleNamespaceInstall }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- end }}
{{- end }}

{{/*
The operator's rights: exactly the calls it makes, each rule proven needed by
tests/api/test_chart_rbac.py (remove one and the FineTune's life breaks there). Shared by the
ClusterRole (all namespaces) and the per-namespace Roles.
  - finetunes get/list/watch/patch: kopf lists and watches them, patches finalizers and its progress
    annotations; the reconciler re-reads one (get) and annotates another FineTune whose champion it took.
  - finetunes/status patch: the reconciler's status write (JSON patch of /status).
  - modeldeployments get/list/watch/patch, modeldeployments/status patch: the same for ModelDeployments.
  - rayjobs create/get/list/delete: launch a run, observe it, delete a stopped or deleted FineTune's jobs.
  - rayservices get/list/watch/create/patch: a RayService-mode ModelDeployment's RayService, its spec
    replaced when it differs (deleted with the ModelDeployment by its ownerReference, so no delete); kopf
    lists and watches ours (by label) so that a Serving deployment's periodic look reads it from the watch.
  - configmaps create/list/delete: the run's spec ConfigMap, and its removal with the FineTune.
  - events create: transition Events (ours, awaited) and kopf's handler Events.
No Secrets, no Pods, no watch on children other than our RayServices, nothing cluster-scoped.
*/}}
{{- define "tuneloop.operatorRules" -}}
- apiGroups: [tuneloop.io]
  resources: [finetunes]
  verbs: [get, list, watch, patch]
- apiGroups: [tuneloop.io]
  resources: [finetunes/status]
  verbs: [patch]
- apiGroups: [tuneloop.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [tuneloop.io]
  resources: [modeldeployments/status]
  verbs: [patch]
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [get, list, create, delete]
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
