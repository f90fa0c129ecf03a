;;; lmrs-e2e-test.el --- End-to-end ERT test of lmrs.el against the real server -*- lexical-binding: t -*-

;; LMRS_BIN=... LMRS_MODEL=... emacs --batch -Q -L editors/emacs \
;;   -l editors/emacs/test/lmrs-e2e-test.el -f ert-run-tests-batch-and-exit
;;
;; Uses Debian's eglot (elpa-eglot, from /usr/share/emacs/site-lisp/elpa) and, when installed,
;; lsp-mode (elpa-lsp-mode).  Opens a Python file, types through keyboard macros (so the command
;; loop and `post-command-hook' run as for a user), waits for the ghost-text overlay, accepts a word
;; with M-f and the rest with TAB, and checks the buffer.

(require 'package)
;; Debian installs ELPA packages under site-lisp/elpa; make them loadable under -Q.
(add-to-list 'package-directory-list "/usr/share/emacs/site-lisp/elpa")
(setq package-user-dir (make-temp-file "lmrs-elpa" t))
(package-initialize)

(require 'ert)
(require 'cl-lib)
(require 'lmrs)

(defconst lmrs-test-timeout (string-to-number (or (getenv "LMRS_TEST_TIMEOUT") "90")))

(defun lmrs-test--wait (what pred secs)
  "Process events until PRED is non-nil; fail after SECS seconds waiting for WHAT."
  (let ((deadline (+ (float-time) secs)))
    (while (not (funcall pred))
      (when (> (float-time) deadline)
        (ert-fail (format "timed out after %ss waiting for %s (status %s %s)"
                          secs what lmrs-status lmrs-status-message)))
      (accept-process-output nil 0.05))))

(defun lmrs-test--type (keys)
  "Type KEYS (a string of characters) one key at a time through the command loop."
  (dolist (c (string-to-list keys))
    (execute-kbd-macro (vector c))
    (accept-process-output nil 0.01)))

(defun lmrs-test--dump-logs ()
  (dolist (b (buffer-list))
    (when (string-match-p "EGLOT.*\\(stderr\\|events\\)\\|lmrs" (buffer-name b))
      (with-current-buffer b
        (message "---- %s (tail) ----\n%s" (buffer-name b)
                 (buffer-substring-no-properties (max (point-min) (- (point-max) 3000)) (point-max)))))))

(defun lmrs-test--run (start-client)
  "Open a Python file, START-CLIENT in it, type, accept, check."
  ;; A fixed project name: the server puts it (and the file's path) into the prompt, so a fixed
  ;; name keeps the (greedy) suggestion the same from run to run.
  (let* ((dir (file-name-as-directory (expand-file-name "demo" (make-temp-file "lmrs-e2e" t))))
         (file (expand-file-name "numbers.py" dir))
         (lmrs-server-command (list (getenv "LMRS_BIN") "lsp"))
         (lmrs-model-path (getenv "LMRS_MODEL"))
         (lmrs-threads 2)
         (lmrs-initialization-options '(:maxTokens 24 :timeoutMs 60000))
         (python-indent-guess-indent-offset nil)
         (inhibit-message nil))
    (should lmrs-model-path)
    (make-directory dir t)
    (with-temp-file file
      (insert "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\n"
              "def is_even(n):\n    \"\"\"Return True when n is even.\"\"\"\n"))
    ;; A project root for eglot: a .git directory is enough for project.el's VC backend.
    (make-directory (expand-file-name ".git" dir))
    (setq lmrs-status 'off)
    (let ((buf (find-file-noselect file)))
      (unwind-protect
          (progn
            (switch-to-buffer buf)
            (should (eq major-mode 'python-mode))
            (funcall start-client)
            (lmrs-mode 1)
            (lmrs-test--wait "the model to load"
                             (lambda () (or (eq lmrs-status 'ready)
                                            (and (eq lmrs-status 'error)
                                                 (ert-fail (format "server error: %s" lmrs-status-message)))))
                             60)
            (goto-char (point-max))
            (lmrs-test--type "    return")
            (lmrs-test--wait "ghost text" #'lmrs-visible-p 90)
            (let* ((suggestion (lmrs-current))
                   (ov lmrs--overlay)
                   (before (buffer-string))
                   (off (1- (point)))
                   (expected (concat (substring before 0 off) suggestion (substring before off))))
              (message "ghost text: %S" suggestion)
              (should (= (overlay-start ov) (point)))
              (should (string-prefix-p suggestion (substring-no-properties (overlay-get ov 'after-string))))
              (should (get-text-property 0 'cursor (overlay-get ov 'after-string)))
              ;; M-f accepts one word and leaves the rest shown; TAB accepts the rest.
              (execute-kbd-macro (kbd "M-f"))
              (let ((word-end (and (string-match "\\`\\s-*\\(?:\\w\\|_\\)+\\|\\`\\s-*[^[:space:]]" suggestion)
                                   (match-end 0))))
                (should (equal (buffer-string)
                               (concat (substring before 0 off) (substring suggestion 0 word-end)
                                       (substring before off))))
                (when (< word-end (length suggestion))
                  (should (equal (lmrs-current) (substring suggestion word-end)))
                  (execute-kbd-macro (kbd "TAB"))))
              (should (equal (buffer-string) expected))
              (should (= (point) (+ 1 off (length suggestion))))
              (should-not (string-match-p "\\`\\s-*\\'" suggestion))
              ;; Typing something else drops the suggestion; C-g dismisses a shown one.
              (lmrs-test--wait "the next suggestion or none" (lambda () (not (eq lmrs-status 'busy))) 30)
              (when (lmrs-visible-p)
                (execute-kbd-macro (kbd "C-g"))
                (should-not (lmrs-visible-p)))))
        (with-current-buffer buf (set-buffer-modified-p nil))))))

(ert-deftest lmrs-e2e-eglot ()
  "Ghost text through eglot: shown, accepted by word and whole, buffer checked."
  (require 'eglot)
  (let ((eglot-server-programs nil)
        (eglot-sync-connect 10)
        (eglot-autoshutdown t))
    (lmrs-eglot-setup '(python-mode))
    (unwind-protect
        (condition-case err
            (lmrs-test--run
             (lambda ()
               (apply #'eglot--connect (eglot--guess-contact))
               (lmrs-test--wait "eglot to connect" #'eglot-current-server 20)))
          ((error ert-test-failed) (lmrs-test--dump-logs) (signal (car err) (cdr err))))
      (ignore-errors (eglot-shutdown-all)))))

(ert-deftest lmrs-e2e-lsp-mode ()
  "Ghost text through lsp-mode (skipped when lsp-mode is not installed)."
  (skip-unless (require 'lsp-mode nil t))
  (let ((lsp-auto-guess-root t)
        (lsp-enable-snippet nil)
        (lsp-keep-workspace-alive nil)
        (lsp-session-file (make-temp-file "lmrs-lsp-session"))
        (lsp-restart 'ignore)
        ;; Only lmrs: Debian may have other python servers registered.
        (lsp-enabled-clients '(lmrs))
        (lsp-warn-no-matched-clients nil))
    (unwind-protect
        (condition-case err
            (lmrs-test--run
             (lambda ()
               (lsp)
               (lmrs-test--wait "lsp-mode to connect" #'lmrs--lsp-active-p 20)))
          ((error ert-test-failed) (lmrs-test--dump-logs) (signal (car err) (cdr err))))
      (ignore-errors (lsp-workspace-shutdown (car (lsp-workspaces)))))))

;;; lmrs-e2e-test.el ends here
