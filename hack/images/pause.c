/* The sandbox ("pause") process of every pod: PID 1 of the pod's namespaces.
 * It holds the namespaces open, reaps orphaned children and exits on SIGINT/SIGTERM,
 * like Kubernetes' build/pause/linux/pause.c. Built statically by hack/build-images.sh
 * (gcc -static) into the image registry.k8s.io/pause:3.6 that containerd 1.6 uses as its
 * default sandbox_image, since no registry is reachable to pull the upstream one. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
  fprintf(stderr, "pause: shutting down, got signal %d\n", signal_number);
  exit(0);
}

static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("pause (rlhf-operator, hack/images/pause.c)\n");
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  }
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
