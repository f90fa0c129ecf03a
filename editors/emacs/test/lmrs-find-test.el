;;; lmrs-find-test.el --- How lmrs.el finds the server binary -*- lexical-binding: t -*-

;; emacs --batch -Q -L editors/emacs -l editors/emacs/test/lmrs-find-test.el -f ert-run-tests-batch-and-exit
;;
;; An explicit `lmrs-server-command' wins; else lmrs on `exec-path'; else ~/.cargo/bin/lmrs; else
;; a user-error (and the status) with the install command.

(require 'ert)
(require 'lmrs)

(defun lmrs-find-test--exe (path)
  (make-directory (file-name-directory path) t)
  (with-temp-file path (insert "#!/bin/sh\nexit 0\n"))
  (set-file-modes path #o755))

(ert-deftest lmrs-find-server-order ()
  (let* ((root (make-temp-file "lmrs-find" t))
         (home (expand-file-name "home" root))
         (bin (expand-file-name "bin" root))
         (process-environment (cons (concat "HOME=" home) process-environment))
         (exec-path (list bin "/nonexistent"))
         (lmrs-server-command nil))
    (make-directory bin t)
    (should-not (lmrs-find-server))
    (let ((err (should-error (lmrs-server-command) :type 'user-error)))
      (should (string-match-p "cargo install --locked" (cadr err))))
    (should (eq lmrs-status 'error))
    (should (string-match-p "not found" lmrs-status-message))
    (lmrs-find-test--exe (expand-file-name ".cargo/bin/lmrs" home))
    (should (equal (lmrs-server-command) (list (expand-file-name ".cargo/bin/lmrs" home) "lsp")))
    (lmrs-find-test--exe (expand-file-name "lmrs" bin))
    (should (equal (lmrs-server-command) (list (expand-file-name "lmrs" bin) "lsp")))
    (let ((lmrs-server-command '("/opt/my/lmrs" "lsp" "--threads" "2")))
      (should (equal (lmrs-server-command) '("/opt/my/lmrs" "lsp" "--threads" "2")))
      (should (equal (cadr (lmrs-eglot-contact)) "/opt/my/lmrs")))
    (delete-directory root t)))

(ert-deftest lmrs-progress-tokens ()
  (setq lmrs-status 'off)
  (lmrs--on-progress "lmrs/pull/1" '(:kind "begin" :title "lmrs: downloading x" :percentage 0))
  (should (eq lmrs-status 'loading))
  (lmrs--on-progress "lmrs/pull/1" '(:kind "report" :message "5 of 10 MB" :percentage 50))
  (should (string-match-p "5 of 10 MB (50%)" lmrs-status-message))
  (lmrs--on-progress "lmrs/pull/1" '(:kind "end" :message "lmrs: qwen2.5-coder:0.5b downloaded"))
  (should (eq lmrs-status 'loading))
  (lmrs--on-progress "lmrs/index" '(:kind "end" :message "3 files indexed"))
  (should (eq lmrs-status 'loading))
  (lmrs--on-progress "lmrs/load/2" '(:kind "end" :message "lmrs: model ready (qwen2)"))
  (should (eq lmrs-status 'ready)))

;;; lmrs-find-test.el ends here
