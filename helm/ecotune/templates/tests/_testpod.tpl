{{/*
A `helm test` pod that runs one shell check with the pinned curl image, with the chart's
podSecurityContext/securityContext (a high non-root UID: curl needs no user of the image).
Args: dict "root" $ "name" suffix "script" "sh -c text" "env" (list of env entries);
optional "serviceAccount" (a name), "volumes" and "volumeMounts" (lists), e.g. a projected
token the check presents.
*/}}
{{- define "ecotune.testPod" -}}
{{- $root := .root -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ printf "%s-test-%s" (include "ecotune.fullname" $root) .name | trunc 63 | trimSuffix "-" }}
  labels:
    {{- include "ecotune.labels" $root | nindent 4 }}
    app.kubernetes.io/component: test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  {{- with .serviceAccount }}
  serviceAccountName: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  {{- with include "ecotune.imagePullSecrets" $root }}{{ . | nindent 2 }}{{ end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: check
      image: {{ include "ecotune.image" $root.Values.tests.image }}
      imagePullPolicy: {{ $root.Values.tests.image.pullPolicy }}
      command: ["sh", "-c"]
      args:
        - {{ .script | quote }}
      {{- with .env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $root.Values.tests.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      {{- with .volumeMounts }}
      volumeMounts:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with .volumes }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
