{{/*
Expand the name of the chart.
*/}}
{{- define "lanyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated at 63 characters (a DNS-1123 label).
If the release name contains the chart name it is used as is.
*/}}
{{- define "lanyard.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "lanyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "lanyard.labels" -}}
helm.sh/chart: {{ include "lanyard.chart" . }}
{{ include "lanyard.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (add app.kubernetes.io/component per workload).
*/}}
{{- define "lanyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lanyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The one image (agent, issuer, fetch sidecar).
*/}}
{{- define "lanyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
ServiceAccount names.
*/}}
{{- define "lanyard.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "lanyard.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lanyard.issuer.serviceAccountName" -}}
{{- if .Values.issuer.serviceAccount.create }}
{{- default (printf "%s-issuer" (include "lanyard.fullname" .)) .Values.issuer.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.issuer.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Resource names.
*/}}
{{- define "lanyard.orgConfigMap" -}}
{{- printf "%s-org" (include "lanyard.fullname" .) }}
{{- end }}

{{- define "lanyard.issuer.fullname" -}}
{{- printf "%s-issuer" (include "lanyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lanyard.agent.fullname" -}}
{{- printf "%s-agent" (include "lanyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The agent's upstream address: agent.upstream.address, or this release's issuer Service.
*/}}
{{- define "lanyard.agent.upstreamAddress" -}}
{{- if .Values.agent.upstream.address }}
{{- .Values.agent.upstream.address }}
{{- else if .Values.issuer.enabled }}
{{- printf "%s.%s.svc:%d" (include "lanyard.issuer.fullname" .) .Release.Namespace (int .Values.issuer.service.port) }}
{{- else }}
{{- fail "agent.upstream.address is required when issuer.enabled is false" }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when the issuer stores in PostgreSQL.
*/}}
{{- define "lanyard.issuer.postgres" -}}
{{- if or .Values.issuer.store.postgres.url .Values.issuer.store.postgres.existingSecret }}true{{ end }}
{{- end }}

{{- define "lanyard.issuer.postgresSecret" -}}
{{- default (printf "%s-store" (include "lanyard.issuer.fullname" .)) .Values.issuer.store.postgres.existingSecret }}
{{- end }}

{{/*
Required values, checked once.
*/}}
{{- define "lanyard.orgPublicKey" -}}
{{- $k := required "orgPublicKey is required: the contents of org.public from `lanyard org init`" .Values.orgPublicKey | trim }}
{{- if not (regexMatch "^[0-9a-f]{64}$" $k) }}
{{- fail "orgPublicKey must be the 64 lowercase hex characters of org.public" }}
{{- end }}
{{- $k }}
{{- end }}

{{- define "lanyard.clusterName" -}}
{{- required "clusterName is required: it names the cluster in the k8s_psat:cluster:<name> node selector" .Values.clusterName }}
{{- end }}
