{{/*
The resources of one component. Each template takes the context built in components.yaml:
  root: the chart's root context ($)
  name: the component's key in .Values.components (storage, indexer, gateway, ...)
  c:    componentDefaults merged with that component's values
  all:  every component's merged values, by name (for dependencies)
*/}}

{{/* ---- settings ------------------------------------------------------------------------- */}}
{{- define "cloudpacs.component.configData" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $p := include "cloudpacs.component.envPrefix" . -}}
{{- $data := dict -}}
{{- $_ := set $data (print $p "GRPC_HOST") "0.0.0.0" -}}
{{- $_ := set $data (print $p "GRPC_PORT") (include "cloudpacs.envValue" $c.grpc.port) -}}
{{- $_ := set $data (print $p "METRICS_PORT") (include "cloudpacs.envValue" $c.metrics.port) -}}
{{- $_ := set $data (print $p "LOG_LEVEL") ($c.logLevel | default $root.Values.logLevel) -}}
{{- $_ := set $data (print $p "LOG_PATIENT_DATA") (toString $root.Values.logPatientData) -}}
{{- /* The one stop deadline the service shares between all its parts (see cloudpacs.component.terminationGrace). */ -}}
{{- $_ := set $data (print $p "SHUTDOWN_GRACE_S") (include "cloudpacs.envValue" $c.shutdownGraceSeconds) -}}
{{- /* Mutual TLS of gRPC: the component's certificate Secret, mounted read-only. */ -}}
{{- $_ := set $data "PACS_TLS_ENABLED" (toString $root.Values.tls.enabled) -}}
{{- with $root.Values.tracing.otlpEndpoint -}}
{{- $_ := set $data "OTEL_EXPORTER_OTLP_ENDPOINT" . -}}
{{- end -}}
{{- if $root.Values.tls.enabled -}}
{{- $_ := set $data "PACS_TLS_CA_FILE" "/etc/cloudpacs/grpc-tls/ca.crt" -}}
{{- $_ := set $data "PACS_TLS_CERT_FILE" "/etc/cloudpacs/grpc-tls/tls.crt" -}}
{{- $_ := set $data "PACS_TLS_KEY_FILE" "/etc/cloudpacs/grpc-tls/tls.key" -}}
{{- end -}}
{{- range $dep := $c.dependsOn -}}
{{- $_ := set $data (printf "%s%s_TARGET" $p ($dep | upper | replace "-" "_")) (include "cloudpacs.component.grpcTarget" (dict "root" $root "name" $dep "all" $.all)) -}}
{{- end -}}
{{- if $c.uses.kafka -}}
{{- $_ := set $data "PACS_KAFKA_BOOTSTRAP" (required "kafka.bootstrap is required: the host:port list of your Kafka brokers" $root.Values.kafka.bootstrap) -}}
{{- $_ := set $data "PACS_KAFKA_CLIENT_ID" (include "cloudpacs.component.fullname" .) -}}
{{- $k := $root.Values.kafka -}}
{{- $_ := set $data "PACS_KAFKA_SECURITY_PROTOCOL" $k.securityProtocol -}}
{{- if hasPrefix "SASL_" $k.securityProtocol -}}
{{- $_ := set $data "PACS_KAFKA_SASL_MECHANISM" $k.sasl.mechanism -}}
{{- $_ := set $data "PACS_KAFKA_SASL_USERNAME" (required (printf "kafka.sasl.username is required with kafka.securityProtocol %s" $k.securityProtocol) $k.sasl.username) -}}
{{- end -}}
{{- if or $k.tls.ca.secretName $k.tls.ca.configMapName $k.tls.clientCertSecret -}}
{{- if not (has $k.securityProtocol (list "SSL" "SASL_SSL")) -}}
{{- fail (printf "kafka.tls.* needs kafka.securityProtocol SSL or SASL_SSL (it is %s)" $k.securityProtocol) -}}
{{- end -}}
{{- end -}}
{{- if and $k.tls.ca.secretName $k.tls.ca.configMapName -}}
{{- fail "set one of kafka.tls.ca.secretName and kafka.tls.ca.configMapName, not both" -}}
{{- end -}}
{{- if or $k.tls.ca.secretName $k.tls.ca.configMapName -}}
{{- $_ := set $data "PACS_KAFKA_SSL_CA_FILE" "/etc/cloudpacs/kafka-ca/ca.crt" -}}
{{- end -}}
{{- if $k.tls.clientCertSecret -}}
{{- $_ := set $data "PACS_KAFKA_SSL_CERT_FILE" "/etc/cloudpacs/kafka-client/tls.crt" -}}
{{- $_ := set $data "PACS_KAFKA_SSL_KEY_FILE" "/etc/cloudpacs/kafka-client/tls.key" -}}
{{- end -}}
{{- end -}}
{{- if $c.uses.s3 -}}
{{- $_ := set $data "PACS_S3_ENDPOINT" (required "s3.endpoint is required: the URL of your S3 endpoint" $root.Values.s3.endpoint) -}}
{{- $_ := set $data "PACS_S3_REGION" $root.Values.s3.region -}}
{{- $_ := set $data "PACS_S3_BUCKET" $root.Values.s3.bucket -}}
{{- $_ := set $data "PACS_S3_VERIFY_TLS" (toString $root.Values.s3.verifyTls) -}}
{{- end -}}
{{- /* Caller authorization (bearer JWTs, trusted services by mTLS CN). Tokens stay required:
PACS_AUTH_REQUIRED=false is only for a stack without mutual TLS, never a deployment. */ -}}
{{- range $c.extraEnv -}}
{{- if eq .name "PACS_AUTH_REQUIRED" -}}
{{- fail (printf "components.%s.extraEnv must not set PACS_AUTH_REQUIRED: a deployment always requires caller tokens" $.name) -}}
{{- end -}}
{{- end -}}
{{- if $c.uses.auth -}}
{{- $a := $root.Values.auth -}}
{{- $_ := set $data "PACS_AUTH_REQUIRED" "true" -}}
{{- $_ := set $data "PACS_AUTH_ISSUER" (required (printf "auth.issuer is required: components.%s authorizes its callers with bearer JWTs (uses.auth); set it to the exact issuer (iss) of your OpenID provider's tokens" .name) $a.issuer) -}}
{{- $_ := set $data "PACS_AUTH_AUDIENCE" (required "auth.audience must not be empty" $a.audience) -}}
{{- with $a.jwksUrl -}}
{{- $_ := set $data "PACS_AUTH_JWKS_URL" . -}}
{{- end -}}
{{- with $a.tenantClaim -}}
{{- $_ := set $data "PACS_AUTH_TENANT_CLAIM" . -}}
{{- end -}}
{{- with $a.rolesClaim -}}
{{- $_ := set $data "PACS_AUTH_ROLES_CLAIM" . -}}
{{- end -}}
{{- with $c.auth.trustedServices -}}
{{- $_ := set $data "PACS_AUTH_TRUSTED_SERVICES" (join "," .) -}}
{{- end -}}
{{- else if $c.auth.trustedServices -}}
{{- fail (printf "components.%s.auth.trustedServices needs components.%s.uses.auth: the component does not authorize callers" .name .name) -}}
{{- end -}}
{{- if $c.dicom.enabled -}}
{{- $d := $c.dicom -}}
{{- $_ := set $data (print $p "DICOM_HOST") "0.0.0.0" -}}
{{- if $d.tlsOnly -}}
{{- if not $d.tls.enabled -}}
{{- fail (printf "components.%s.dicom.tlsOnly needs components.%s.dicom.tls.enabled (and tls.secretName): with TLS off it would serve no DICOM port at all" .name .name) -}}
{{- end -}}
{{- /* No plaintext DICOM port is bound, so none is configured. */ -}}
{{- $_ := set $data (print $p "TLS_ONLY") "true" -}}
{{- else -}}
{{- $_ := set $data (print $p "DICOM_PORT") (include "cloudpacs.envValue" $d.port) -}}
{{- end -}}
{{- $_ := set $data (print $p "AE_TITLE") $d.aeTitle -}}
{{- /* The pod's limit, enforced across the workers through the gateway's shared table; no
     process is capped below it (one worker may serve them all). */ -}}
{{- $_ := set $data (print $p "POD_MAX_ASSOCIATIONS") (include "cloudpacs.envValue" $d.maxAssociations) -}}
{{- $_ := set $data (print $p "MAX_ASSOCIATIONS") (include "cloudpacs.envValue" $d.maxAssociations) -}}
{{- $_ := set $data (print $p "WORKERS") (include "cloudpacs.envValue" $d.workers) -}}
{{- if gt (int64 $d.workers) 1 -}}
{{- /* Every worker records its metrics there and the first serves their sum on /metrics
(prometheus_client's multiprocess mode); without it /metrics counts one worker only. */ -}}
{{- $_ := set $data "PROMETHEUS_MULTIPROC_DIR" "/var/run/cloudpacs/metrics" -}}
{{- end -}}
{{- with $d.allowedNetworks -}}
{{- $_ := set $data (print $p "ALLOWED_NETWORKS") (toJson .) -}}
{{- end -}}
{{- if $d.siteRegistry -}}
{{- $_ := set $data (print $p "SITE_REGISTRY") "/etc/cloudpacs/site-registry/sites.yaml" -}}
{{- end -}}
{{- if $d.tls.enabled -}}
{{- $_ := set $data (print $p "TLS_PORT") (include "cloudpacs.envValue" $d.tls.port) -}}
{{- $_ := set $data (print $p "TLS_CERT_FILE") "/etc/cloudpacs/dicom-tls/tls.crt" -}}
{{- $_ := set $data (print $p "TLS_KEY_FILE") "/etc/cloudpacs/dicom-tls/tls.key" -}}
{{- if $d.tls.caKey -}}
{{- $_ := set $data (print $p "TLS_CA_FILE") "/etc/cloudpacs/dicom-ca/ca.pem" -}}
{{- end -}}
{{- $_ := set $data (print $p "TLS_REQUIRE_CLIENT_CERT") (toString $d.tls.requireClientCert) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .name "indexer") $root.Values.database.migrations.enabled -}}
{{- /* The pre-upgrade hook migrates (templates/indexer-migrations.yaml); the pods only check. */ -}}
{{- $_ := set $data (print $p "MIGRATE_ON_START") "false" -}}
{{- end -}}
{{- include "cloudpacs.egress.settings" (merge (dict "data" $data) .) -}}
{{- if $c.routes -}}
{{- $_ := set $data (print $p "RULES_FILE") "/etc/cloudpacs/routes/routes.yaml" -}}
{{- end -}}
{{- if $c.http.enabled -}}
{{- $_ := set $data (print $p "HTTP_HOST") "0.0.0.0" -}}
{{- $_ := set $data (print $p "HTTP_PORT") (include "cloudpacs.envValue" $c.http.port) -}}
{{- end -}}
{{- range $key, $value := $c.settings -}}
{{- $_ := set $data (printf "%s%s" $p ($key | upper | replace "-" "_")) (include "cloudpacs.envValue" $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{- define "cloudpacs.component.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}-config
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
data:
  {{- include "cloudpacs.component.configData" . | nindent 2 }}
{{- end -}}

{{- define "cloudpacs.component.siteRegistry" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}-site-registry
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
data:
  sites.yaml: |
    {{- include "cloudpacs.egress.registryForGateway" .c.dicom.siteRegistry | nindent 4 }}
{{- end -}}

{{- define "cloudpacs.component.routes" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}-routes
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
data:
  routes.yaml: |
    {{- include "cloudpacs.egress.routesForRouter" .c.routes | nindent 4 }}
{{- end -}}

{{/* ---- identity ------------------------------------------------------------------------- */}}
{{- define "cloudpacs.component.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "cloudpacs.component.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
  {{- with .c.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The services never call the Kubernetes API.
automountServiceAccountToken: false
{{- end -}}

{{/* ---- workload ------------------------------------------------------------------------- */}}
{{/*
Seconds a process may take after its stop deadline: closing its channels, the last log lines,
the interpreter's exit. Fixed here rather than a value, so no setting can make it contradict
the deadline.
*/}}
{{- define "cloudpacs.shutdownExitSeconds" -}}10{{- end -}}

{{/*
terminationGracePeriodSeconds, derived and never set: Kubernetes counts it from the start of
termination, so it covers the preStop sleep, then the one shutdown deadline the service shares
between all its parts (gRPC drain, consumers, DICOM associations, Storage Commitment, workers;
PACS_<NAME>_SHUTDOWN_GRACE_S, rendered from the same value), then the exit.
*/}}
{{- define "cloudpacs.component.terminationGrace" -}}
{{- add (int64 .c.preStopSleepSeconds) (int64 (ceil .c.shutdownGraceSeconds)) (int64 (include "cloudpacs.shutdownExitSeconds" .)) -}}
{{- end -}}

{{- define "cloudpacs.component.env" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $p := include "cloudpacs.component.envPrefix" . -}}
{{- if $c.uses.s3 }}
- name: PACS_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cloudpacs.s3SecretName" $root }}
      key: {{ $root.Values.s3.credentials.accessKeyKey }}
- name: PACS_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cloudpacs.s3SecretName" $root }}
      key: {{ $root.Values.s3.credentials.secretKeyKey }}
{{- end }}
{{- if $c.uses.database }}
- name: {{ $p }}DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cloudpacs.databaseSecretName" $root }}
      key: {{ $root.Values.database.urlKey }}
{{- end }}
{{- if and $c.uses.kafka (hasPrefix "SASL_" $root.Values.kafka.securityProtocol) }}
- name: PACS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "cloudpacs.kafkaSecretName" $root }}
      key: {{ $root.Values.kafka.sasl.passwordKey }}
{{- end }}
{{- with $c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "cloudpacs.component.deployment" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $d := $c.dicom -}}
{{- $probePort := int64 $c.grpc.port -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ int64 $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never below the wanted capacity while rolling: a new pod must be ready first.
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "cloudpacs.component.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cloudpacs.component.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when their configuration or the chart-made credentials change.
        checksum/config: {{ include "cloudpacs.component.configmap" . | sha256sum }}
        # How terminationGracePeriodSeconds is made up, for whoever reads the pod.
        cloudpacs.io/shutdown-budget: {{ printf "preStop %ds + deadline %ss (PACS_%s_SHUTDOWN_GRACE_S) + exit %ds" (int64 $c.preStopSleepSeconds) (include "cloudpacs.envValue" $c.shutdownGraceSeconds) (.name | upper | replace "-" "_") (int64 (include "cloudpacs.shutdownExitSeconds" .)) | quote }}
        checksum/secrets: {{ include (print $root.Template.BasePath "/secrets.yaml") $root | sha256sum }}
        {{- if and $d.enabled $d.siteRegistry }}
        checksum/site-registry: {{ include "cloudpacs.component.siteRegistry" . | sha256sum }}
        {{- end }}
        {{- if $c.routes }}
        checksum/routes: {{ include "cloudpacs.component.routes" . | sha256sum }}
        {{- end }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "cloudpacs.component.serviceAccountName" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # preStop sleep + the shutdown deadline (PACS_*_SHUTDOWN_GRACE_S) + time to exit after it.
      terminationGracePeriodSeconds: {{ include "cloudpacs.component.terminationGrace" . }}
      containers:
        - name: {{ .name }}
          image: {{ include "cloudpacs.component.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ int64 $c.grpc.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ int64 $c.metrics.port }}
              protocol: TCP
            {{- range $c.tcpPorts }}
            - name: {{ .name }}
              containerPort: {{ int64 .port }}
              protocol: TCP
            {{- end }}
            {{- if $c.http.enabled }}
            - name: http
              containerPort: {{ int64 $c.http.port }}
              protocol: TCP
            {{- end }}
            {{- if $d.enabled }}
            {{- if not $d.tlsOnly }}
            - name: dicom
              containerPort: {{ int64 $d.port }}
              protocol: TCP
            {{- end }}
            {{- if $d.tls.enabled }}
            - name: dicom-tls
              containerPort: {{ int64 $d.tls.port }}
              protocol: TCP
            {{- end }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "cloudpacs.component.fullname" . }}-config
          {{- $env := include "cloudpacs.component.env" . }}
          {{- if trim $env }}
          env:
            {{- $env | nindent 12 }}
          {{- end }}
          {{- if $root.Values.tls.enabled }}
          # grpc.health.v1 (overall server health, service "") over mutual TLS. The kubelet's
          # native gRPC probe speaks plaintext only (no client certificate, no server
          # verification), so the server refuses it at the handshake: an exec probe calls health
          # with the pod's own certificate instead (pacs_common.health_probe). Liveness only
          # needs the process to accept connections, and a TCP check costs no interpreter start.
          startupProbe:
            exec:
              command: {{ include "cloudpacs.component.healthProbe" . }}
            periodSeconds: 2
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ max 1 (div (int64 $c.probes.startupSeconds) 2) }}
          readinessProbe:
            exec:
              command: {{ include "cloudpacs.component.healthProbe" . }}
            periodSeconds: {{ int64 $c.probes.readinessPeriodSeconds }}
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ int64 $c.probes.failureThreshold }}
          livenessProbe:
            tcpSocket:
              port: grpc
            periodSeconds: {{ int64 $c.probes.livenessPeriodSeconds }}
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ int64 $c.probes.failureThreshold }}
          {{- else }}
          # Native gRPC probes against grpc.health.v1 (overall server health, service ""):
          # possible only because mutual TLS is off.
          startupProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: 2
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ max 1 (div (int64 $c.probes.startupSeconds) 2) }}
          readinessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ int64 $c.probes.readinessPeriodSeconds }}
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ int64 $c.probes.failureThreshold }}
          livenessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ int64 $c.probes.livenessPeriodSeconds }}
            timeoutSeconds: {{ int64 $c.probes.timeoutSeconds }}
            failureThreshold: {{ int64 $c.probes.failureThreshold }}
          {{- end }}
          {{- if gt (int64 $c.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ int64 $c.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $d.enabled (gt (int64 $d.workers) 1) }}
            - name: metrics-multiproc
              mountPath: /var/run/cloudpacs/metrics
            {{- end }}
            {{- if $c.uses.kafka }}
            {{- if or $root.Values.kafka.tls.ca.secretName $root.Values.kafka.tls.ca.configMapName }}
            - name: kafka-ca
              mountPath: /etc/cloudpacs/kafka-ca
              readOnly: true
            {{- end }}
            {{- if $root.Values.kafka.tls.clientCertSecret }}
            - name: kafka-client
              mountPath: /etc/cloudpacs/kafka-client
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: grpc-tls
              mountPath: /etc/cloudpacs/grpc-tls
              readOnly: true
            {{- end }}
            {{- if $c.routes }}
            - name: routes
              mountPath: /etc/cloudpacs/routes
              readOnly: true
            {{- end }}
            {{- if $d.enabled }}
            {{- if $d.siteRegistry }}
            - name: site-registry
              mountPath: /etc/cloudpacs/site-registry
              readOnly: true
            {{- end }}
            {{- if $d.tls.enabled }}
            - name: dicom-tls
              mountPath: /etc/cloudpacs/dicom-tls
              readOnly: true
            {{- if $d.tls.caKey }}
            - name: dicom-ca
              mountPath: /etc/cloudpacs/dicom-ca
              readOnly: true
            {{- end }}
            {{- end }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $c.tmpSizeLimit }}
        {{- if and $d.enabled (gt (int64 $d.workers) 1) }}
        - name: metrics-multiproc
          emptyDir:
            sizeLimit: 64Mi
        {{- end }}
        {{- if $c.uses.kafka }}
        {{- with $root.Values.kafka.tls.ca }}
        {{- if .secretName }}
        - name: kafka-ca
          secret:
            secretName: {{ .secretName }}
            items:
              - key: {{ .key }}
                path: ca.crt
        {{- else if .configMapName }}
        - name: kafka-ca
          configMap:
            name: {{ .configMapName }}
            items:
              - key: {{ .key }}
                path: ca.crt
        {{- end }}
        {{- end }}
        {{- with $root.Values.kafka.tls.clientCertSecret }}
        - name: kafka-client
          secret:
            secretName: {{ . }}
            items:
              - key: tls.crt
                path: tls.crt
              - key: tls.key
                path: tls.key
        {{- end }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        - name: grpc-tls
          secret:
            {{- include "cloudpacs.component.grpcTlsSecret" . | nindent 12 }}
            defaultMode: 0440
        {{- end }}
        {{- if $c.routes }}
        - name: routes
          configMap:
            name: {{ include "cloudpacs.component.fullname" . }}-routes
        {{- end }}
        {{- if $d.enabled }}
        {{- if $d.siteRegistry }}
        - name: site-registry
          configMap:
            name: {{ include "cloudpacs.component.fullname" . }}-site-registry
        {{- end }}
        {{- if $d.tls.enabled }}
        - name: dicom-tls
          secret:
            secretName: {{ required (printf "components.%s.dicom.tls.secretName is required when DICOM TLS is on" .name) $d.tls.secretName }}
            items:
              - key: tls.crt
                path: tls.crt
              - key: tls.key
                path: tls.key
        {{- if $d.tls.caKey }}
        - name: dicom-ca
          secret:
            secretName: {{ $d.tls.caSecretName | default $d.tls.secretName }}
            items:
              - key: {{ $d.tls.caKey }}
                path: ca.pem
        {{- else if $d.tls.requireClientCert }}
        {{- fail (printf "components.%s.dicom.tls.requireClientCert needs dicom.tls.caKey (the CA that signs client certificates)" .name) }}
        {{- end }}
        {{- end }}
        {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $c.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "cloudpacs.component.selectorLabels" . | nindent 14 }}
          matchLabelKeys:
            - pod-template-hash
      {{- end }}
{{- end -}}

{{/* ---- mutual TLS ----------------------------------------------------------------------- */}}
{{/* The exec probe's command: gRPC health over mutual TLS with the pod's own certificate. */}}
{{- define "cloudpacs.component.healthProbe" -}}
{{- $timeout := max 1 (sub (int64 .c.probes.timeoutSeconds) 1) -}}
{{- list "python" "-m" "pacs_common.health_probe" "--port" (toString (int64 .c.grpc.port)) "--timeout" (toString $timeout) | toJson -}}
{{- end -}}

{{/*
The Secret volume with the component's ca.crt, tls.crt and tls.key, from (first that applies)
the component's own tls.existingSecret, the release's tls.existingSecret (keys ca.crt,
<component>.crt, <component>.key), or the Secret cert-manager fills.
*/}}
{{- define "cloudpacs.component.grpcTlsSecret" -}}
{{- $tls := .root.Values.tls -}}
{{- if .c.tls.existingSecret -}}
secretName: {{ .c.tls.existingSecret }}
items:
  - key: ca.crt
    path: ca.crt
  - key: tls.crt
    path: tls.crt
  - key: tls.key
    path: tls.key
{{- else if $tls.existingSecret -}}
secretName: {{ $tls.existingSecret }}
items:
  - key: ca.crt
    path: ca.crt
  - key: {{ .name }}.crt
    path: tls.crt
  - key: {{ .name }}.key
    path: tls.key
{{- else if $tls.certManager.enabled -}}
secretName: {{ include "cloudpacs.component.fullname" . }}-grpc-tls
items:
  - key: ca.crt
    path: ca.crt
  - key: tls.crt
    path: tls.crt
  - key: tls.key
    path: tls.key
{{- else -}}
{{- fail (printf "tls.enabled (mutual TLS between the services) needs certificates for %s: set tls.certManager.enabled with tls.certManager.issuerRef, or tls.existingSecret, or components.%s.tls.existingSecret" .name .name) -}}
{{- end -}}
{{- end -}}

{{/* A cert-manager Certificate of the component's identity (common name = component name). */}}
{{- define "cloudpacs.component.certificate" -}}
{{- $root := .root -}}
{{- $cm := $root.Values.tls.certManager -}}
{{- $fullname := include "cloudpacs.component.fullname" . -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $fullname }}-grpc
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
spec:
  secretName: {{ $fullname }}-grpc-tls
  # The identity the other services authorize (x509_common_name of the gRPC auth context).
  commonName: {{ .name }}
  dnsNames:
    - {{ .name }}
    - {{ $fullname }}
    - {{ $fullname }}.{{ $root.Release.Namespace }}.svc
    - {{ $fullname }}.{{ $root.Release.Namespace }}.svc.{{ $root.Values.clusterDomain }}
  duration: {{ $cm.duration }}
  renewBefore: {{ $cm.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages:
    - digital signature
    - server auth
    - client auth
  issuerRef:
    name: {{ required "tls.certManager.issuerRef.name is required when tls.certManager.enabled" $cm.issuerRef.name }}
    kind: {{ $cm.issuerRef.kind }}
    group: {{ $cm.issuerRef.group }}
{{- end -}}

{{/* ---- network -------------------------------------------------------------------------- */}}
{{- define "cloudpacs.component.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
    # Selected by the ServiceMonitor (the DICOM Service has no metrics port).
    cloudpacs.io/scrape: "true"
  {{- with .c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .c.service.type }}
  selector:
    {{- include "cloudpacs.component.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ int64 .c.grpc.port }}
      targetPort: grpc
      protocol: TCP
    - name: metrics
      port: {{ int64 .c.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- range .c.tcpPorts }}
    - name: {{ .name }}
      port: {{ int64 .port }}
      targetPort: {{ .name }}
      protocol: TCP
    {{- end }}
    {{- if .c.http.enabled }}
    - name: http
      port: {{ int64 .c.http.port }}
      targetPort: http
      protocol: TCP
    {{- end }}
{{- end -}}

{{- define "cloudpacs.component.ingress" -}}
{{- $i := .c.http.ingress -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
  {{- with $i.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $i.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- if $i.tlsSecretName }}
  tls:
    - secretName: {{ $i.tlsSecretName }}
      {{- with $i.host }}
      hosts:
        - {{ . }}
      {{- end }}
  {{- end }}
  rules:
    - http:
        paths:
          - path: {{ $i.path }}
            pathType: Prefix
            backend:
              service:
                name: {{ include "cloudpacs.component.fullname" . }}
                port:
                  name: http
      {{- with $i.host }}
      host: {{ . }}
      {{- end }}
{{- end -}}

{{- define "cloudpacs.component.dicomService" -}}
{{- $d := .c.dicom -}}
{{- $external := ne $d.service.type "ClusterIP" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}-dicom
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
  {{- with $d.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $d.service.type }}
  {{- if $external }}
  # Local keeps the modality's source address, which the gateway checks against the site registry.
  externalTrafficPolicy: {{ $d.service.externalTrafficPolicy }}
  {{- end }}
  {{- if and (eq $d.service.type "LoadBalancer") $d.service.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml $d.service.loadBalancerSourceRanges | nindent 4 }}
  {{- end }}
  selector:
    {{- include "cloudpacs.component.selectorLabels" . | nindent 4 }}
  ports:
    {{- if not $d.tlsOnly }}
    - name: dicom
      port: {{ int64 $d.port }}
      targetPort: dicom
      protocol: TCP
      {{- if and $external (gt (int64 $d.service.nodePort) 0) }}
      nodePort: {{ int64 $d.service.nodePort }}
      {{- end }}
    {{- end }}
    {{- if $d.tls.enabled }}
    - name: dicom-tls
      port: {{ int64 $d.tls.port }}
      targetPort: dicom-tls
      protocol: TCP
      {{- if and $external (gt (int64 $d.service.tlsNodePort) 0) }}
      nodePort: {{ int64 $d.service.tlsNodePort }}
      {{- end }}
    {{- end }}
{{- end -}}

{{- define "cloudpacs.component.hpa" -}}
{{- $a := .c.autoscaling -}}
{{- if and (eq (int64 $a.targetCPUUtilizationPercentage) 0) (eq (int64 $a.targetMemoryUtilizationPercentage) 0) -}}
{{- fail (printf "components.%s.autoscaling needs a CPU or memory target" .name) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "cloudpacs.component.fullname" . }}
  minReplicas: {{ int64 $a.minReplicas }}
  maxReplicas: {{ int64 $a.maxReplicas }}
  metrics:
    {{- if gt (int64 $a.targetCPUUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int64 $a.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if gt (int64 $a.targetMemoryUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ int64 $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  behavior:
    scaleDown:
      # Scale in slowly: a gateway pod may hold long associations.
      stabilizationWindowSeconds: 300
{{- end -}}

{{- define "cloudpacs.component.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
spec:
  {{- $max := .c.podDisruptionBudget.maxUnavailable }}
  {{- if kindIs "string" $max }}
  maxUnavailable: {{ $max | quote }}
  {{- else }}
  maxUnavailable: {{ int64 $max }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "cloudpacs.component.selectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "cloudpacs.component.networkPolicy" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $d := $c.dicom -}}
{{- $np := $root.Values.networkPolicy -}}
{{- $self := .name -}}
{{- $callers := list -}}
{{- range $name, $other := .all -}}
{{- if and $other.enabled (has $self $other.dependsOn) -}}
{{- $callers = append $callers $name -}}
{{- end -}}
{{- end -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "cloudpacs.component.fullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cloudpacs.component.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "cloudpacs.component.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    {{- if $callers }}
    # gRPC from the components that call this one.
    - from:
        {{- range $callers }}
        - podSelector:
            matchLabels:
              {{- include "cloudpacs.component.selectorLabels" (dict "root" $root "name" .) | nindent 14 }}
        {{- end }}
      ports:
        - port: grpc
          protocol: TCP
    {{- end }}
    # Prometheus scrapes (networkPolicy.metrics).
    - from:
        {{- if $np.metrics.peers }}
        {{- toYaml $np.metrics.peers | nindent 8 }}
        {{- else if $np.metrics.namespaceSelector }}
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.metrics.namespaceSelector | nindent 14 }}
        {{- else }}
        {{- fail "networkPolicy.metrics needs namespaceSelector (the labels of your monitoring namespace) or peers: metrics are not open to every namespace; to allow any namespace on purpose, set peers to [{namespaceSelector: {}}]" }}
        {{- end }}
      ports:
        - port: metrics
          protocol: TCP
    {{- if $d.enabled }}
    # DICOM associations from the modalities' networks (the gateway admits callers itself too).
    - from:
        {{- range $d.allowedCIDRs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        {{- if not $d.tlsOnly }}
        - port: dicom
          protocol: TCP
        {{- end }}
        {{- if $d.tls.enabled }}
        - port: dicom-tls
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if $c.http.enabled }}
    # HTTP (DICOMweb) from the clients' networks and the ingress controller (callers are
    # authenticated by their bearer tokens).
    - from:
        {{- range $c.http.allowedCIDRs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
    {{- end }}
    {{- with $c.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $np.egress.enabled }}
  egress:
    # Cluster DNS.
    - to:
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.dns.namespaceSelector | nindent 14 }}
          podSelector:
            matchLabels:
              {{- toYaml $np.dns.podSelector | nindent 14 }}
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- range $dep := $c.dependsOn }}
    # gRPC to {{ $dep }}.
    - to:
        - podSelector:
            matchLabels:
              {{- include "cloudpacs.component.selectorLabels" (dict "root" $root "name" $dep) | nindent 14 }}
      ports:
        - port: {{ int64 (index $.all $dep).grpc.port }}
          protocol: TCP
    {{- end }}
    {{- with trim (include "cloudpacs.egress.rules" .) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $c.networkPolicy.extraEgress }}
    # components.{{ $self }}.networkPolicy.extraEgress.
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}
