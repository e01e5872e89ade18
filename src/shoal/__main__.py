from shoal._cli.app import main

main()
