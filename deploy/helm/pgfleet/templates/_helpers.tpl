{{- define "pgfleet.fullname" -}}
{{- printf "%s-pgfleet" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgfleet.labels" -}}
app.kubernetes.io/name: pgfleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pgfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pgfleet.selector" -}}
app.kubernetes.io/name: pgfleet
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgfleet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment every pgfleet process gets: secrets by reference, never inlined. */}}
{{- define "pgfleet.env" -}}
- name: PGFLEET_NAMESPACE
  value: {{ .Values.namespace | quote }}
- name: PGFLEET_BACKUP_URL
  value: {{ .Values.backupUrl | quote }}
- name: PGFLEET_LOG_FORMAT
  value: json
{{- range $name, $key := dict "PGFLEET_CATALOG_URL" "catalog-url" "PGFLEET_AMQP_URL" "amqp-url" "PGFLEET_SERVER_URL" "server-url" "PGFLEET_SECRET_KEY" "secret-key" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef: {name: {{ $.Values.existingSecret }}, key: {{ $key }}}
{{- end }}
{{- range $name, $key := dict "AWS_ACCESS_KEY_ID" "aws-access-key-id" "AWS_SECRET_ACCESS_KEY" "aws-secret-access-key" "PGFLEET_METRICS_TOKEN" "metrics-token" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef: {name: {{ $.Values.existingSecret }}, key: {{ $key }}, optional: true}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "pgfleet.pod" -}}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir: {}
  - name: data
    emptyDir: {}
{{- end -}}

{{- define "pgfleet.mounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: data, mountPath: /var/lib/pgfleet}
{{- end -}}
