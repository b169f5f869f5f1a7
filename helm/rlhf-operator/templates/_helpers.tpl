{{/*
Chart name (app.kubernetes.io/name of the operator's objects).
*/}}
{{- define "rlhf-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: RELEASE-rlhf-operator, or RELEASE when it already contains the
chart name. Kept to 52 characters so that suffixed names (-metrics, -dashboard-...) fit.
*/}}
{{- define "rlhf-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rlhf-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "rlhf-operator.labels" -}}
helm.sh/chart: {{ include "rlhf-operator.chart" . }}
{{ include "rlhf-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rlhf-operator
{{- end }}

{{/*
Selector labels of the operator pods.
*/}}
{{- define "rlhf-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlhf-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "rlhf-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rlhf-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rlhf-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "rlhf-operator.trainerImage" -}}
{{- .Values.trainer.image | default (printf "ghcr.io/rlhf-operator/trainer:%s" .Chart.AppVersion) }}
{{- end }}

{{/*
The name of the Kopf peering object. It must match the operator's
settings.peering.name (operator/rlhf_operator/handlers.py and cli.py).
*/}}
{{- define "rlhf-operator.peeringName" -}}
rlhf-operator
{{- end }}

{{/*
RBAC rules the operator needs in every namespace it watches: in a ClusterRole when it
watches all namespaces, in a Role per namespace otherwise. No wildcards; no Secrets; no
pods/exec; no deletes (owner references let the garbage collector remove children).
*/}}
{{- define "rlhf-operator.namespacedRules" -}}
# The four job kinds. list/watch: Kopf's watch streams (event handlers, timers, and the
# in-memory index the operator reads jobs and their upstreams from). get: a fresh read
# after a status write lost a race (409). patch: Kopf removes the finalizer and
# annotations earlier versions of this operator kept on jobs; it writes nothing else.
- apiGroups: ["rlhf.dev"]
  resources: ["sftjobs", "rewardmodeljobs", "ppojobs", "dpojobs"]
  verbs: ["get", "list", "watch", "patch"]
# Status is a subresource: the operator writes phase, conditions, progress, metrics and
# output there (kube.patch_status).
- apiGroups: ["rlhf.dev"]
  resources: ["sftjobs/status", "rewardmodeljobs/status", "ppojobs/status", "dpojobs/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion: true. Where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift), that
# needs update on the owner's finalizers subresource.
- apiGroups: ["rlhf.dev"]
  resources:
    - "sftjobs/finalizers"
    - "rewardmodeljobs/finalizers"
    - "ppojobs/finalizers"
    - "dpojobs/finalizers"
  verbs: ["update"]
# Each job's children: the trainer config (ConfigMap), the output volume claim, and the
# headless rendezvous Service of multi-node jobs. Created once, never changed or deleted
# by the operator (the garbage collector deletes them with their job).
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims", "services"]
  verbs: ["get", "create"]
# The training Job. create: start it; patch: suspend/resume and run-policy changes;
# list/watch: the in-memory index the operator reads Jobs from, whose events also wake
# the owning job at once when its Job starts or finishes; get: a Job created a moment
# ago that the watch has not brought yet; delete: a multi-node job's failed Job (its
# uid only, with its pods first), to restart the whole group from its checkpoint.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Training pods (only the operator's, by label): their phase, IP (to read the trainer's
# /progress) and termination message (final metrics, error reason), kept in an
# in-memory index fed by one watch. Read-only: no get, create, exec or logs.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events on the jobs (kubectl describe): posted by the operator and by Kopf. list: the
# Warning Events about a training pod still being created long after it was scheduled
# (FailedMount, Multi-Attach), or about a Job that made no pod (FailedCreate), read once
# per reconcile of such a job only, to say in its status why it waits. No watch.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create", "patch"]
# Kueue's Workloads, for jobs with queueName: list/watch: the in-memory index the status
# reads why a queued job waits from (QuotaReserved, Admitted, Evicted), whose events also
# wake the job when Kueue admits or evicts it; patch: spec.active, the way a queued job is
# suspended and resumed (Kueue owns the Job's spec.suspend). Without Kueue installed the
# rule is unused.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list", "watch", "patch"]
{{- end }}

{{/*
Cluster-scoped reads Kopf needs in every mode.
*/}}
{{- define "rlhf-operator.crdRules" -}}
# Kopf discovers the resources it serves and watches CustomResourceDefinitions to notice
# them being added or removed at runtime. Read-only.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
operator.recheckSeconds, refused with one message unless it is a number above 0. (The
schema only checks its type: a schema range check gives two messages, one per allowed
type, neither of which says what is wanted.) `--set` passes 2.5 as a string; float64
turns what is not a number into 0.
*/}}
{{- define "rlhf-operator.recheckSeconds" -}}
{{- $value := .Values.operator.recheckSeconds }}
{{- if le (float64 $value) 0.0 }}
{{- fail (printf "operator.recheckSeconds must be a number of seconds above 0, e.g. 5 (got %v)" $value) }}
{{- end }}
{{- $value }}
{{- end }}

{{/*
Refuses a PodDisruptionBudget that no eviction can satisfy: with it, `kubectl drain` of
the node running the operator never finishes. That is every budget over one replica,
and a budget that keeps all replicas (minAvailable >= replicas or "100%") or lets none
go (maxUnavailable 0 or "0%").
*/}}
{{- define "rlhf-operator.checkDisruptionBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $replicas := int .Values.replicas }}
{{- $max := toString $pdb.maxUnavailable }}
{{- $min := $pdb.minAvailable }}
{{- if lt $replicas 2 }}
{{- fail (printf "podDisruptionBudget.enabled needs replicas >= 2 (got %d): a budget over one operator pod blocks every node drain; set replicas: 2 or leave the budget off" $replicas) }}
{{- else if not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if or (eq $max "0") (eq $max "0%") }}
{{- fail "podDisruptionBudget.maxUnavailable 0 lets no operator pod go and blocks every node drain: use 1 or more" }}
{{- end }}
{{- else if or (eq (toString $min) "100%") (and (not (kindIs "string" $min)) (ge (int $min) $replicas)) }}
{{- fail (printf "podDisruptionBudget.minAvailable %v keeps all %d replicas and blocks every node drain: use at most %d" $min $replicas (sub $replicas 1)) }}
{{- end }}
{{- end }}
