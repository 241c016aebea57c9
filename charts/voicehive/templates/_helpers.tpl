{{/* Names and labels shared by every template. */}}

{{- define "voicehive.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped prefix: the release name when it already says "voicehive". */}}
{{- define "voicehive.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "voicehive.labels" -}}
app.kubernetes.io/name: {{ include "voicehive.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: voicehive
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" . "component" "operator"). */}}
{{- define "voicehive.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicehive.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's image: call with (dict "root" . "component" "operator"). */}}
{{- /* With image.digests.<component> set, the image is pinned by digest (<registry>/<component>@sha256:…). */ -}}
{{- define "voicehive.image" -}}
{{- $digest := get (.root.Values.image.digests | default dict) .component -}}
{{- if $digest -}}
{{- printf "%s/%s@%s" .root.Values.image.registry .component $digest -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .component (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Scheduling shared by operator and orchestrator: call with (dict "root" . "component" "operator" "values" $v). */}}
{{- define "voicehive.scheduling" -}}
{{- $v := .values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "voicehive.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget: call with (dict "root" . "component" "operator" "values" $v). */}}
{{- define "voicehive.pdb" -}}
{{- if .values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "voicehive.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "voicehive.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  minAvailable: {{ .values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "voicehive.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Every namespace worker pods run in: the release namespace plus worker.namespaces. */}}
{{- define "voicehive.workerNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.worker.namespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{- define "voicehive.redisEnv" -}}
- name: VOICEHIVE_REDIS_URL
{{- if .Values.redis.urlSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.urlSecret.name }}
      key: {{ .Values.redis.urlSecret.key }}
{{- else }}
  value: {{ required "redis.url or redis.urlSecret.name is required" .Values.redis.url | quote }}
{{- end }}
{{- end -}}

{{- define "voicehive.livekitEnv" -}}
- name: LIVEKIT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.secretName }}
      key: api-key
- name: LIVEKIT_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.secretName }}
      key: api-secret
{{- end -}}

{{/* Restricted pod security: non-root, read-only root, no privilege escalation. */}}
{{- define "voicehive.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "voicehive.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* OpenTelemetry export (docs/tracing.md); templates include it only when tracing.otlpEndpoint is set. */}}
{{- define "voicehive.tracingEnv" -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.tracing.sampleRatio | toString | quote }}
{{- end -}}
