/* exitas code N   -> exit(N)
 * exitas signal N -> reset signal N to its default action and raise it
 *                    (the process dies of the signal, e.g. 15 -> 143, 9 -> 137) */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int n = atoi(argv[2]);
    if (!strcmp(argv[1], "code"))
        return n;
    if (!strcmp(argv[1], "signal")) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(n, SIG_DFL);
        raise(n);
        for (;;)
            pause();
    }
    return 2;
}
