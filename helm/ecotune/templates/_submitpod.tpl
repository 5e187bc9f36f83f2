{{/*
Pod spec of a submit Job (CronJob or recurring-run hook). Args: dict "root" $ "study" $s
"args" (list of extra CLI args).
*/}}
{{- define "ecotune.submitPodSpec" -}}
{{- $root := .root -}}
{{- $s := .study -}}
{{- $mode := $root.Values.kfp.auth.mode -}}
serviceAccountName: {{ include "ecotune.serviceAccountName" $root }}
automountServiceAccountToken: false
restartPolicy: Never
{{- with include "ecotune.imagePullSecrets" $root }}{{ . | nindent 0 }}{{ end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.submit.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.submit.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.submit.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: submit
    image: {{ include "ecotune.image" $root.Values.images.controlPlane }}
    imagePullPolicy: {{ $root.Values.images.controlPlane.pullPolicy }}
    command: ["python", "-m", "pipelines.submit"]
    args:
      - --config
      - /etc/ecotune/study.yaml
      {{- range .args }}
      - {{ . | quote }}
      {{- end }}
    env:
      - name: HOME
        value: /tmp
      - name: ECOTUNE_STUDY
        value: {{ $s.name | quote }}
      # the Job's name: a retried submit pod of the same Job gives the same run name
      - name: ECOTUNE_JOB_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.labels['batch.kubernetes.io/job-name']
      - name: KFP_HOST
        value: {{ $root.Values.kfp.host | quote }}
      - name: KFP_NAMESPACE
        value: {{ include "ecotune.kfpNamespace" $root | quote }}
      {{- if eq $mode "serviceAccountToken" }}
      - name: KF_PIPELINES_SA_TOKEN_PATH
        value: /var/run/secrets/kubeflow/pipelines/token
      {{- else if eq $mode "existingSecret" }}
      - name: KFP_BEARER_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ $root.Values.kfp.auth.existingSecret }}
            key: {{ $root.Values.kfp.auth.tokenKey }}
      {{- end }}
      {{- with $root.Values.submit.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    resources:
      {{- toYaml $root.Values.submit.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: study
        mountPath: /etc/ecotune
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if eq $mode "serviceAccountToken" }}
      - name: kfp-token
        mountPath: /var/run/secrets/kubeflow/pipelines
        readOnly: true
      {{- end }}
volumes:
  - name: study
    configMap:
      name: {{ include "ecotune.studiesConfigMap" $root }}
      items:
        - key: {{ printf "%s.yaml" $s.name }}
          path: study.yaml
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
  {{- if eq $mode "serviceAccountToken" }}
  - name: kfp-token
    projected:
      sources:
        - serviceAccountToken:
            path: token
            audience: pipelines.kubeflow.org
            expirationSeconds: {{ int $root.Values.kfp.auth.tokenExpirationSeconds }}
  {{- end }}
{{- end -}}
