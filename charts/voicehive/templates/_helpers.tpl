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

{{/*
The hotel namespaces (where HotelLines, worker pods and VoiceSessions live): operator.watchNamespaces
plus worker.namespaces plus, at install time, every namespace whose labels match
operator.namespaceSelector (resolved with `lookup`: label a new namespace, then `helm upgrade`).
Required unless operator.clusterWide: least privilege means Roles in these namespaces only.
*/}}
{{- define "voicehive.hotelNamespaces" -}}
{{- $all := list -}}
{{- range .Values.operator.watchNamespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- range .Values.worker.namespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- with .Values.operator.namespaceSelector -}}
{{- range (lookup "v1" "Namespace" "" "").items -}}
{{- $labels := .metadata.labels | default dict -}}
{{- $match := true -}}
{{- range $k, $v := $.Values.operator.namespaceSelector -}}{{- if ne (get $labels $k) $v -}}{{- $match = false -}}{{- end -}}{{- end -}}
{{- if $match -}}{{- $all = append $all .metadata.name -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (empty $all) (not .Values.operator.clusterWide) -}}
{{- fail "operator.watchNamespaces (or operator.namespaceSelector) must name the hotel namespaces: the operator, orchestrator and workers get Roles there only. operator.clusterWide=true grants every namespace instead (not for production)." -}}
{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{/* Every namespace worker pods run in: the release namespace plus the hotel namespaces. */}}
{{- define "voicehive.workerNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range (include "voicehive.hotelNamespaces" . | fromJsonArray) -}}{{- $all = append $all . -}}{{- end -}}
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
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]+@" (.Values.redis.url | default "") }}
{{- fail "redis.url carries a password, which would stand in clear in every Pod spec: put the URL in a Secret and name it in redis.urlSecret" }}
{{- end }}
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

{{/* The API server's addresses for NetworkPolicy egress: values, else the `kubernetes` Endpoints
at install time, else every address (lab fallback; docs/delivery.md says to narrow it). */}}
{{- define "voicehive.apiServerCIDRs" -}}
{{- $cidrs := .Values.networkPolicy.apiServer.cidrs | default list -}}
{{- if empty $cidrs -}}
{{- range (lookup "v1" "Endpoints" "default" "kubernetes").subsets | default list -}}
{{- range .addresses -}}{{- $cidrs = append $cidrs (printf "%s/32" .ip) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if empty $cidrs -}}{{- $cidrs = list "0.0.0.0/0" -}}{{- end -}}
{{- $cidrs | toJson -}}
{{- end -}}


{{/* The Redis CA (TLS): a volume and its mount, when redis.caSecret.name is set. */}}
{{- define "voicehive.redisCaMount" -}}
{{- if .Values.redis.caSecret.name }}
- name: redis-ca
  mountPath: /etc/voicehive/redis-ca
  readOnly: true
{{- end }}
{{- end -}}
{{- define "voicehive.redisCaVolume" -}}
{{- if .Values.redis.caSecret.name }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.caSecret.name }}
    items:
      - key: {{ .Values.redis.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end -}}
