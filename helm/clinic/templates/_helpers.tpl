{{/* Names and labels shared by every template. */}}
{{- define "clinic.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "clinic.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; a component's also carry its selector labels (clinic.selector),
which name the instance, so these do not. */}}
{{- define "clinic.labels" -}}
app.kubernetes.io/part-of: clinic
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "clinic.selector" -}}
app.kubernetes.io/name: clinic
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The restricted pod and container security contexts. */}}
{{- define "clinic.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "clinic.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment every binary reads: where Kafka and the registry are, and the registry's
credentials when it wants them. */}}
{{- define "clinic.kafkaEnv" -}}
- name: CLINIC_KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
- name: CLINIC_REGISTRY_API_URL
  value: {{ .Values.schemaRegistry.url | quote }}
{{- with .Values.schemaRegistry.existingSecret }}
- name: CLINIC_REGISTRY_USERNAME
  valueFrom:
    secretKeyRef: { name: {{ . }}, key: {{ $.Values.schemaRegistry.usernameKey }} }
- name: CLINIC_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ . }}, key: {{ $.Values.schemaRegistry.passwordKey }} }
{{- end }}
{{- end -}}

{{/* The operators' commands' Kafka client properties (CLINIC_KAFKA__<NAME>), as the processors'
streams.librdkafka: the same SASL or TLS settings for the hook; and the deployment's topic prefix
(CLINIC_TOPIC_PREFIX), so the hook creates, registers and connects the topics the processors use. */}}
{{- define "clinic.kafkaClientEnv" -}}
{{- with .Values.kafka.topicPrefix }}
- name: CLINIC_TOPIC_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := .Values.kafka.librdkafka }}
- name: CLINIC_KAFKA__{{ $key | replace "." "_" | upper }}
  value: {{ $value | quote }}
{{- end }}
{{- if .Values.kafka.sasl.existingSecret }}
- name: CLINIC_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ .Values.kafka.sasl.existingSecret }}, key: {{ .Values.kafka.sasl.passwordKey }} }
{{- end }}
{{- end -}}

{{/* Probes on the admin port. */}}
{{- define "clinic.probes" -}}
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: 5
startupProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{- define "clinic.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
