{{/*
Shared helpers. Component templates receive a context built by "cloudpacs.componentContext":
  dict "root" $ "name" <component name> "c" <componentDefaults merged with the component's values>
*/}}

{{- define "cloudpacs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cloudpacs.fullname" -}}
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

{{- define "cloudpacs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource of the release. */}}
{{- define "cloudpacs.labels" -}}
helm.sh/chart: {{ include "cloudpacs.chart" . }}
app.kubernetes.io/name: {{ include "cloudpacs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudpacs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of every pod of the release (default-deny NetworkPolicy). */}}
{{- define "cloudpacs.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudpacs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Fill .out (a dict) with every component's settings: componentDefaults overlaid with the
component's own values (maps merge; scalars and lists replace, false and 0 included).
Mutating a passed-in dict keeps native value types, which a YAML round trip would not.
*/}}
{{- define "cloudpacs.mergeComponents" -}}
{{- $root := .root -}}
{{- range $name, $own := $root.Values.components -}}
{{- $_ := set $.out $name (mergeOverwrite (deepCopy $root.Values.componentDefaults) (deepCopy ($own | default dict))) -}}
{{- end -}}
{{- end -}}

{{/* A settings value as an environment variable string (whole numbers without exponent). */}}
{{- define "cloudpacs.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- printf "%d" (int64 .) -}}
{{- else if or (kindIs "map" .) (kindIs "slice" .) -}}
{{- toJson . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "cloudpacs.component.fullname" -}}
{{- printf "%s-%s" (include "cloudpacs.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cloudpacs.component.labels" -}}
{{ include "cloudpacs.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "cloudpacs.component.selectorLabels" -}}
{{ include "cloudpacs.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "cloudpacs.component.serviceAccountName" -}}
{{- if .c.serviceAccount.create -}}
{{- default (include "cloudpacs.component.fullname" .) .c.serviceAccount.name -}}
{{- else -}}
{{- default "default" .c.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment variable prefix of a component: "indexer" -> "PACS_INDEXER_". */}}
{{- define "cloudpacs.component.envPrefix" -}}
{{- printf "PACS_%s_" (.name | upper | replace "-" "_") -}}
{{- end -}}

{{- define "cloudpacs.component.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $repository := required (printf "components.%s.image.repository is required" .name) .c.image.repository -}}
{{- $ref := ternary (printf "%s/%s" $registry $repository) $repository (ne $registry "") -}}
{{- if .c.image.digest -}}
{{- printf "%s@%s" $ref .c.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (.c.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* In-cluster gRPC target of component .name (context: root, name, all). */}}
{{- define "cloudpacs.component.grpcTarget" -}}
{{- $target := required (printf "dependsOn names an unknown component %q" .name) (index .all .name) -}}
{{- printf "%s.%s.svc.%s:%d" (include "cloudpacs.component.fullname" .) .root.Release.Namespace .root.Values.clusterDomain (int64 $target.grpc.port) -}}
{{- end -}}

{{/* Names of the Secrets holding credentials (existing ones or those the chart creates). */}}
{{- define "cloudpacs.s3SecretName" -}}
{{- .Values.s3.credentials.existingSecret | default (printf "%s-s3" (include "cloudpacs.fullname" .)) -}}
{{- end -}}

{{- define "cloudpacs.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "cloudpacs.fullname" .)) -}}
{{- end -}}

{{- define "cloudpacs.kafkaSecretName" -}}
{{- .Values.kafka.sasl.existingSecret | default (printf "%s-kafka" (include "cloudpacs.fullname" .)) -}}
{{- end -}}

{{/* Which external systems enabled components use: fills .out with kafka/s3/database -> bool. */}}
{{- define "cloudpacs.externalUse" -}}
{{- $all := dict -}}
{{- include "cloudpacs.mergeComponents" (dict "root" .root "out" $all) -}}
{{- range $kind := list "kafka" "s3" "database" -}}
{{- $_ := set $.out $kind false -}}
{{- range $name, $c := $all -}}
{{- if and $c.enabled (index $c.uses $kind) -}}
{{- $_ := set $.out $kind true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
