/* The entrypoint of berth's CRI stand-in for critest's nonewprivs image
   (deploy/cri-images.sh): installed setuid root, it prints the effective uid it runs with,
   0 unless no_new_privs kept the setuid bit from taking effect. */
#include <stdio.h>
#include <unistd.h>
int main(void) {
  printf("Effective uid: %d\n", (int)geteuid());
  return 0;
}
