{{/* Chart name. */}}
{{- define "ecotune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: release-chart unless the release name already contains the chart. */}}
{{- define "ecotune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ecotune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecotune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecotune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecotune.labels" -}}
helm.sh/chart: {{ include "ecotune.chart" . }}
{{ include "ecotune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ecotune
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ecotune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-submit" (include "ecotune.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ecotune.studiesConfigMap" -}}
{{- printf "%s-studies" (include "ecotune.fullname" .) -}}
{{- end -}}

{{- define "ecotune.kfpNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace -}}
{{- end -}}

{{/* Image reference from {registry, repository, tag, digest}: digest wins over tag. */}}
{{- define "ecotune.image" -}}
{{- $repo := .repository -}}
{{- if .registry }}{{ $repo = printf "%s/%s" .registry .repository }}{{ end -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString .tag) -}}
{{- end -}}
{{- end -}}

{{/*
A study merged over studyDefaults (shallow: a field set on the study replaces the default),
returned as YAML; use with `include ... | fromYaml`. Args: dict "root" $ "study" .
*/}}
{{- define "ecotune.study" -}}
{{- $s := deepCopy .root.Values.studyDefaults -}}
{{- range $k, $v := .study }}{{ $_ := set $s $k $v }}{{ end -}}
{{- toYaml $s -}}
{{- end -}}

{{/* Name of a per-study resource: <fullname>-<study> (max 52 chars, the CronJob limit). */}}
{{- define "ecotune.studyResource" -}}
{{- printf "%s-%s" (include "ecotune.fullname" .root) .name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecotune.vllmName" -}}
{{- printf "%s-vllm-%s" (include "ecotune.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Whether a study's engine is a chart-managed vLLM Deployment. Args: dict "root" $ "study" . */}}
{{- define "ecotune.managedVllm" -}}
{{- if and .root.Values.vllm.deploy (eq .study.engine.type "gpuEvaluator") }}true{{ end -}}
{{- end -}}

{{/* "true" when a study starts one vLLM per pipeline run (engine.type gpuEvaluator, no
vllm.deploy, gpuEvaluator.engine perRun, the default): its pipeline pods then create and
delete that Deployment + Service (rbac.yaml), which takes ingress from them (networkpolicy.yaml). */}}
{{- define "ecotune.anyRunEngine" -}}
{{- $root := . -}}
{{- range .Values.studies -}}
{{- if and (not $root.Values.vllm.deploy) (eq (dig "type" "" .engine) "gpuEvaluator") (eq (dig "gpuEvaluator" "engine" "perRun" .engine) "perRun") }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* PVC name of a study's model cache ("" when none). Args: dict "root" $ "study" . */}}
{{- define "ecotune.modelCacheClaim" -}}
{{- $mc := dig "gpuEvaluator" "modelCache" dict .study.engine -}}
{{- if $mc.existingClaim -}}
{{- $mc.existingClaim -}}
{{- else if $mc.create -}}
{{- printf "%s-models-%s" (include "ecotune.fullname" .root) .study.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* OpenAI base URL of a study's engine ("" = started inside the pipeline run). */}}
{{- define "ecotune.engineUrl" -}}
{{- if eq .study.engine.type "service" -}}
{{- .study.engine.service.url -}}
{{- else if include "ecotune.managedVllm" . -}}
{{- printf "http://%s.%s.svc.cluster.local:%d/v1" (include "ecotune.vllmName" (dict "root" .root "name" .study.name)) .root.Release.Namespace (int .root.Values.vllm.port) -}}
{{- end -}}
{{- end -}}

{{/*
Labels of a study's pipeline pods (added with kfp-kubernetes add_pod_label; the
NetworkPolicy selects them). Args: dict "root" $ "name" study name.
*/}}
{{- define "ecotune.pipelinePodLabels" -}}
app.kubernetes.io/part-of: ecotune
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: pipeline
ecotune.io/study: {{ .name }}
{{- end -}}

{{/* imagePullSecrets block ("" when none); callers: with include ... | nindent N. */}}
{{- define "ecotune.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
Checks values the schema cannot express: unique study names, r_min <= r_max, and that the
credentials a feature needs are referenced.
*/}}
{{- define "ecotune.validate" -}}
{{- $seen := dict -}}
{{- range .Values.studies -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "studies: duplicate study name %q" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $s := include "ecotune.study" (dict "root" $ "study" .) | fromYaml -}}
{{- if gt (int $s.r_min) (int $s.r_max) -}}
{{- fail (printf "studies[%s]: r_min (%v) must be <= r_max (%v)" .name $s.r_min $s.r_max) -}}
{{- end -}}
{{- if and (eq $.Values.kfp.scheduler "recurringRun") $s.timeZone -}}
{{- $utc := list "UTC" "Etc/UTC" -}}
{{- $zone := $.Values.kfp.recurringRunTimeZone | default "Etc/UTC" -}}
{{- if not (or (eq $s.timeZone $zone) (and (has $s.timeZone $utc) (has $zone $utc))) -}}
{{- fail (printf "studies[%s]: timeZone %s cannot be kept by a KFP recurring run: KFP evaluates every cron schedule in its ScheduledWorkflow controller's zone (kfp.recurringRunTimeZone: %s). Use kfp.scheduler cronjob (CronJob spec.timeZone), or set the study's timeZone to %s" .name $s.timeZone $zone $zone) -}}
{{- end -}}
{{- end -}}
{{- $ctx := dict "root" $ "study" $s -}}
{{- if and (eq $s.engine.type "gpuEvaluator") (not (include "ecotune.managedVllm" $ctx)) $.Values.mlflow.enabled $.Values.mlflow.registry.enabled (not (dig "gpuEvaluator" "servingUrl" "" $s.engine)) -}}
{{- fail (printf "studies[%s]: engine.gpuEvaluator.servingUrl is required: vLLM runs inside the pipeline (vllm.deploy false), so the winner registered in MLflow needs the URL where the model is served in production" .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.s3.enabled (not .Values.s3.existingSecret) -}}
{{- fail "s3.existingSecret is required when s3.enabled (credentials are never inlined)" -}}
{{- end -}}
{{- if and (eq .Values.kfp.auth.mode "existingSecret") (not .Values.kfp.auth.existingSecret) -}}
{{- fail "kfp.auth.existingSecret is required when kfp.auth.mode is existingSecret" -}}
{{- end -}}
{{- end -}}
