{{/*
Names, labels and the per-service view of the values.
*/}}

{{- define "chatpop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chatpop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The services, in start order. */}}
{{- define "chatpop.services" -}}
identity rooms messaging payments edge
{{- end -}}

{{- define "chatpop.grpcServices" -}}
identity rooms messaging payments
{{- end -}}

{{/* Fixed ports per service (the same as `make run`): main port and metrics port. */}}
{{- define "chatpop.port" -}}
{{- $ports := dict "identity" 7101 "rooms" 7102 "messaging" 7103 "payments" 7104 "edge" 8080 -}}
{{- index $ports . -}}
{{- end -}}

{{- define "chatpop.metricsPort" -}}
{{- $ports := dict "edge" 9100 "identity" 9101 "rooms" 9102 "messaging" 9103 "payments" 9104 -}}
{{- index $ports . -}}
{{- end -}}

{{/* <fullname>-<component>; the ctx is (dict "root" $ "component" name). */}}
{{- define "chatpop.componentName" -}}
{{- printf "%s-%s" (include "chatpop.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chatpop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; the ctx is (dict "root" $ "component" name). */}}
{{- define "chatpop.labels" -}}
helm.sh/chart: {{ include "chatpop.chart" .root }}
{{ include "chatpop.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: chatpop
{{- end -}}

{{- define "chatpop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatpop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every pod of the release (NetworkPolicy default deny). */}}
{{- define "chatpop.releaseSelector" -}}
app.kubernetes.io/name: {{ include "chatpop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Deep merge where the override wins whenever it names a key, even with false, 0 or "" (sprig's
mergeOverwrite skips such "empty" values, which would make `pdb.enabled: false` impossible).
ctx: (dict "base" map "over" map); returns YAML.
*/}}
{{- define "chatpop.merge" -}}
{{- $out := deepCopy .base -}}
{{- range $key, $value := .over -}}
{{- $current := get $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "chatpop.merge" (dict "base" $current "over" $value) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The settings of one service: defaults merged with services.<name>. ctx: (dict "root" $ "name" n); YAML. */}}
{{- define "chatpop.serviceValues" -}}
{{- $over := index .root.Values.services .name | default dict -}}
{{- include "chatpop.merge" (dict "base" .root.Values.defaults "over" $over) -}}
{{- end -}}

{{- define "chatpop.image" -}}
{{- $image := .root.Values.image -}}
{{- $repository := printf "%s-%s" $image.repository .component -}}
{{- if $image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $image.registry) $repository -}}
{{- end -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "chatpop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chatpop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the dev Secret (dev.secrets.enabled). */}}
{{- define "chatpop.devSecretName" -}}
{{- printf "%s-dev" (include "chatpop.fullname" .) -}}
{{- end -}}

{{/* Secret name for a reference block, or the dev Secret when dev secrets are on. ctx: (dict "root" $ "ref" block) */}}
{{- define "chatpop.secretName" -}}
{{- if .root.Values.dev.secrets.enabled -}}
{{- include "chatpop.devSecretName" .root -}}
{{- else -}}
{{- required "an existingSecret is required (see helm/README.md, Secrets)" .ref.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "chatpop.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "https://%s" (index .Values.ingress.hosts 0).host -}}
{{- else -}}
http://localhost:8080
{{- end -}}
{{- end -}}

{{/* DATABASE_URL and REDIS_URL (REDIS_CLUSTER with redis.cluster): the dev datastores of the release,
or the referenced Secrets. */}}
{{- define "chatpop.databaseEnv" -}}
- name: DATABASE_URL
{{- if .Values.dev.datastores.enabled }}
  value: {{ printf "postgresql://chatpop@%s:5432/chatpop" (include "chatpop.componentName" (dict "root" . "component" "postgres")) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.existingSecret is required (a Secret holding the database URL)" .Values.postgres.existingSecret }}
      key: {{ .Values.postgres.existingSecretKey }}
{{- end }}
{{- end -}}

{{- define "chatpop.redisEnv" -}}
{{- if and .Values.dev.datastores.enabled .Values.redis.cluster }}
{{- fail "redis.cluster needs an external Redis Cluster (redis.existingSecret): the dev Redis of dev.datastores is a single node" }}
{{- end }}
- name: REDIS_URL
{{- if .Values.dev.datastores.enabled }}
  value: {{ printf "redis://%s:6379/0" (include "chatpop.componentName" (dict "root" . "component" "redis")) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.existingSecret is required (a Secret holding the Redis URL)" .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- if .Values.redis.cluster }}
- name: REDIS_CLUSTER
  value: "true"
{{- end }}
{{- end -}}

{{/* OTEL_* variables; ctx: (dict "root" $ "component" name). */}}
{{- define "chatpop.otelEnv" -}}
{{- $otel := .root.Values.otel }}
- name: OTEL_SERVICE_NAME
  value: chatpop-{{ .component }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attributes := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE)" (printf "service.version=%s" .root.Chart.AppVersion) }}
{{- range $key, $value := $otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- if $otel.endpoint }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $otel.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $otel.sampleRatio | quote }}
{{- end }}
{{- end -}}

{{/* host:port of every gRPC service (headless Services: clients balance per call over the pods). */}}
{{- define "chatpop.addressEnv" -}}
{{- $root := . }}
{{- range $name := splitList " " (include "chatpop.grpcServices" .) }}
- name: {{ upper $name }}_ADDR
  value: {{ printf "%s:%s" (include "chatpop.componentName" (dict "root" $root "component" $name)) (include "chatpop.port" $name) | quote }}
{{- end }}
{{- end -}}
